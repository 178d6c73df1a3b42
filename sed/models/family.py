"""Model families and their declared public weights.

Each family's model file declares itself once, next to its registered sizes::

    register_family(Family("beats", sizes=("beats_iter3", "beats_micro"), test_size="beats_micro",
                           length_policy="native", importer="sed.models.pretrained.beats:IMPORTER",
                           weights=WEIGHTS, test_kwargs={"input_tdim": 98, "depth": 2}))

``test_size`` with ``test_kwargs`` over it is the family's CPU test configuration (:func:`tiny_kwargs`): it
takes 1 s of audio and runs in well under a second; the kwargs also shrink the family's other sizes (fewer
blocks), so a test can build any registered name cheaply. Tests parametrize over these, one per family
(a family's sizes share its code), never over name prefixes.

``weights`` is the family's table of public checkpoints, one :class:`Weights` per short name, all of one
shape (name, architecture, sources, classes and label set, multi-label, sample rate, clip length,
normalisation, licence, the published metric and its citation). ``importer`` names the object that reads
the family's release files (:class:`sed.models.pretrained.build.Importer`); it is imported when a
pretrained source is first resolved, so a model file never imports its importer (which imports it).
``sedkit models`` and the README's backbone table are made from these declarations.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Family",
    "Weights",
    "families",
    "family",
    "family_of_model",
    "find_weights",
    "importer_of",
    "family_test_sizes",
    "register_family",
    "tiny_kwargs",
    "weights_table",
]


@dataclass(frozen=True)
class Weights:
    """One public checkpoint of a family, reachable by its short ``name``."""

    name: str  # the short name users pass (``pretrained=`` / ``--checkpoint`` / ``--from``)
    arch: str  # the registered size it builds
    sources: tuple[str, ...]  # tried in order: "hf://owner/repo[/file]", "https://...", "timm://name"
    classes: int | None  # outputs of its head (None: no head, a pre-trained-only encoder)
    label_set: str | None  # "audioset", "speechcommands", "imagenet" (a head sed never keeps), None
    multi_label: bool
    sample_rate: int
    clip_seconds: float  # the clip length it was trained on
    normalisation: str  # what the front end normalises with
    licence: str
    metric: str  # the published number, e.g. "AudioSet mAP 0.459"
    citation: str  # where the number is published
    homepage: str  # the official release page (where to download it by hand)
    defaults: dict[str, Any] = field(default_factory=dict)  # model kwargs the download may lack

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out["sources"] = list(self.sources)
        return out


@dataclass(frozen=True)
class Family:
    """A model family: its registered sizes, a CPU test size (and the kwargs that make it one), its length
    policy, importer and weights."""

    name: str
    sizes: tuple[str, ...]
    test_size: str
    #: "fixed" (pad or cut to the clip), "native" (each clip at its own length), "frames" (SELD: frame outputs
    #: over the whole input), "backbone" (the wrapped model's)
    length_policy: str
    description: str
    importer: str | None = None  # "module:ATTRIBUTE" of its Importer (foreign release files)
    weights: tuple[Weights, ...] = ()
    #: kwargs over ``test_size`` (or any size) for a CPU test: 1 s of audio, well under a second
    test_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if self.test_size not in self.sizes:
            raise ValueError(f"family {self.name}: test size {self.test_size!r} is not one of its sizes")
        if self.length_policy not in ("fixed", "native", "frames", "backbone"):
            raise ValueError(f"family {self.name}: unknown length policy {self.length_policy!r}")
        for w in self.weights:
            if w.arch not in self.sizes:
                raise ValueError(
                    f"family {self.name}: weights {w.name} build {w.arch!r}, not one of its sizes"
                )


_FAMILIES: dict[str, Family] = {}


def register_family(fam: Family) -> Family:
    known = {w.name: f.name for f in _FAMILIES.values() for w in f.weights if f.name != fam.name}
    clash = [w.name for w in fam.weights if w.name in known]
    if clash:
        raise ValueError(f"family {fam.name}: short names {clash} are already declared by {known[clash[0]]}")
    _FAMILIES[fam.name] = fam
    return fam


def families() -> list[Family]:
    return list(_FAMILIES.values())


def family(name: str) -> Family:
    if name not in _FAMILIES:
        raise ValueError(f"unknown family {name!r}; known families: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def family_of_model(model_name: str) -> Family | None:
    """The family that registered the size ``model_name``."""
    return next((f for f in _FAMILIES.values() if model_name in f.sizes), None)


def find_weights(name: str) -> tuple[Family, Weights] | None:
    """The family and declared weights of a short name, or None."""
    for fam in _FAMILIES.values():
        for w in fam.weights:
            if w.name == name:
                return fam, w
    return None


def weights_table() -> list[Weights]:
    return [w for f in _FAMILIES.values() for w in f.weights]


def default_weights(model_name: str) -> Weights | None:
    """What ``pretrained=True`` loads for a size: the first weights of its family's table that build it."""
    fam = family_of_model(model_name)
    return next((w for w in fam.weights if w.arch == model_name), None) if fam else None


def tiny_kwargs(model_name: str) -> dict[str, Any]:
    """The declared test kwargs of the family of the registered size ``model_name`` (a fresh copy)."""
    fam = family_of_model(model_name)
    if fam is None:
        raise ValueError(f"model {model_name!r} belongs to no family")
    return copy.deepcopy(fam.test_kwargs)


def family_test_sizes() -> list[str]:
    """One test size per family (its sizes share its code), in registration order."""
    return [f.test_size for f in _FAMILIES.values()]


def importer_of(fam: Family):
    """The family's :class:`~sed.models.pretrained.build.Importer` (imported on first use), or None."""
    if fam.importer is None:
        return None
    module, _, attr = fam.importer.partition(":")
    return getattr(importlib.import_module(module), attr)
