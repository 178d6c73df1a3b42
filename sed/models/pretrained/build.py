"""One pretrained build for every family: resolve -> which family -> architecture -> key mapping -> model.

A family's importer (``pretrained/<family>.py``) is an :class:`Importer`: a sniffer (does a source's
contents belong to the family?), a pure key mapper (the family's ``checkpoint_filter_fn``: source tensors ->
sed names) and ``arch_from(contents, state)`` (the registered size, its kwargs, the source's head and labels,
read from the mapped tensors and the source's config), plus optional positional-embedding adaptation.
:func:`build_pretrained` owns the rest, the same for every family: keep or re-initialise the head
(``Importer.head``, with a warning), label names (a
527-output head of an AudioSet tagger gets the ontology names and multi-label scores), the build under the
allocation budget, the tensor checks, the load with its missing/unexpected keys named in the source's own
layout, the report and the self-description. A sed checkpoint of the same family is a source as well.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sed.data.corpora.audioset import audioset_labels
from sed.errors import CheckpointError, one_line
from sed.models.budget import check_weights, checked_build
from sed.models.family import families, family, family_of_model, find_weights, importer_of
from sed.models.norm import end_warm_start
from sed.models.pretrained.sources import Contents, resolve
from sed.models.registry import model_entry

__all__ = ["Arch", "Importer", "build_pretrained", "claimed_by", "import_pretrained", "sed_arch"]

log = logging.getLogger(__name__)


@dataclass
class Arch:
    """What a source says about the model to build."""

    size: str  # the registered size
    kwargs: dict[str, Any]  # constructor kwargs the source defines
    num_classes: int | None  # outputs of the source's head (None: no head)
    labels: list[str] | None = None
    multi_label: bool | None = None  # None: an AudioSet-sized head of an AudioSet family is multi-label
    kind: str = ""  # the source format, for the report
    fresh_head: bool = False  # a head never kept (an ImageNet one): dropped without a warning
    extra: dict[str, Any] = field(default_factory=dict)  # what the family's adapt step needs (e.g. a grid)


@dataclass(frozen=True)
class Importer:
    """The per-family part of the pipeline (see the module docstring)."""

    family: str
    title: str  # how messages name the family: "AST", "BEATs"
    what: str  # what its sources are, for a refusal: "a BEATs release file (a dict with cfg and model)"
    claims: Callable[[Contents], bool]  # the sniffer (on foreign contents; sed checkpoints go by model name)
    arch_from: Callable[[Contents, dict[str, torch.Tensor]], Arch]  # (contents, the mapped tensors) -> Arch
    map_keys: Callable[
        [Contents], tuple[dict[str, torch.Tensor], list[str]]
    ]  # -> (sed tensors, dropped keys)
    head: str = "head."  # the prefix re-initialised for another class count
    head_what: str = ""  # what the head holds, for the warning ("LayerNorm + Linear; ")
    adapt: Callable[..., list[str]] | None = None  # (state, model, arch, **options) -> notes
    options: tuple[str, ...] = ()  # build options only the family's adapt step takes
    source_key: Callable[[str, Contents], str] | None = None  # a sed key in the source's layout
    audioset: bool = True  # a 527-output head is the AudioSet ontology

    def build(self, source, num_classes: int | None = None, *, factory=None, **overrides) -> nn.Module:
        return build_pretrained(self, source, num_classes, factory=factory, **overrides)


def sed_arch(contents: Contents) -> Arch:
    """The architecture of a sed checkpoint used as a starting point: its description's model."""
    kwargs = dict(contents.sed["model_kwargs"])
    labels = kwargs.pop("labels", None) or contents.sed.get("labels") or None
    n = kwargs.pop("num_classes", None)
    return Arch(contents.sed["model_name"], kwargs, n, labels, contents.sed.get("multi_label"), "sed")


def _claimants(contents: Contents) -> list[str]:
    """The families whose sniffer claims foreign contents (or whose size a sed checkpoint holds)."""
    if contents.sed is not None:
        fam = family_of_model(str(contents.sed.get("model_name")))
        return [fam.name] if fam else []
    if contents.weights is not None:
        return [find_weights(contents.weights.name)[0].name]
    out = []
    for fam in families():
        imp = importer_of(fam)
        try:
            if imp is not None and imp.claims(contents):
                out.append(fam.name)
        except Exception:  # noqa: BLE001 - a sniffer that trips on odd contents does not claim them
            continue
    return out


def claimed_by(contents: Contents) -> str | None:
    found = _claimants(contents)
    return found[0] if found else None


def _a(title: str) -> str:
    return f"an {title}" if title[0] in "AEIOU" else f"a {title}"


def _refuse(imp: Importer, contents: Contents) -> None:
    other = claimed_by(contents)
    if other == imp.family:
        return
    if contents.sed is not None:
        raise CheckpointError(
            contents.desc, f"holds a {contents.sed.get('model_name')!r} model, not {_a(imp.title)} one"
        )
    if other is not None:
        title = importer_of(family(other)).title
        raise CheckpointError(
            contents.desc, f"is {_a(title)} checkpoint, not {_a(imp.title)} one (use a {other}_* model)"
        )
    first = [str(k) for k in list(contents.state)[:5]]
    raise CheckpointError(contents.desc, f"is not {imp.what} (first keys {first})")


def _labels(imp: Importer, arch: Arch) -> tuple[list[str] | None, bool]:
    audioset = imp.audioset and arch.num_classes == 527
    labels = arch.labels or (audioset_labels() if audioset else None)
    multi = arch.multi_label if arch.multi_label is not None else audioset
    return labels, bool(multi)


_FRAME_HEAD = "frame_head."


def _frame_head_state(model: nn.Module, state: dict, keep_head: bool) -> tuple[dict, bool]:
    """(``state`` without a frame head that does not fit ``model``'s, whether ``model``'s frame head stays
    freshly initialised). A frame head (:mod:`sed.models.frames`) is kept only from a source with the same
    one and the same classes; a clip source gives a frame model its encoder and no frame head."""
    mine = {k for k in model.state_dict() if k.startswith(_FRAME_HEAD)}
    theirs = {k for k in state if k.startswith(_FRAME_HEAD)}
    if keep_head and theirs == mine:
        return state, False
    return {k: v for k, v in state.items() if not k.startswith(_FRAME_HEAD)}, bool(mine)


def build_pretrained(
    imp: Importer, source, num_classes: int | None = None, *, factory=None, **overrides
) -> nn.Module:
    """A model of ``imp``'s family from ``source`` (anything :func:`~sed.models.pretrained.sources.resolve`
    takes). ``num_classes=None`` keeps the source's head (and its labels and score type); another count
    (or ``labels`` of another length) re-initialises ``imp.head`` with a warning. ``factory``: the
    registered size to build (default: the source's). Other keyword arguments override the model's."""
    contents = resolve(source)
    _refuse(imp, contents)
    options = {k: overrides.pop(k) for k in imp.options if k in overrides}
    state, dropped = (dict(contents.state), []) if contents.sed is not None else imp.map_keys(contents)
    arch = imp.arch_from(contents, state)
    user_labels = overrides.get("labels")
    if num_classes is None and user_labels is not None:
        num_classes = len(user_labels)
    src_nc = arch.num_classes
    keep_head = src_nc is not None and not arch.fresh_head and num_classes in (None, src_nc)
    kwargs = {**contents.defaults, **arch.kwargs, **overrides}
    labels, multi = _labels(imp, arch)
    if keep_head:
        num_classes = src_nc
        if user_labels is None and labels is not None:
            kwargs["labels"] = labels
    factory = factory or model_entry(arch.size).factory
    with checked_build(contents.desc, factory.__name__, state):
        model = factory(**kwargs) if num_classes is None else factory(num_classes=num_classes, **kwargs)
    try:
        notes = imp.adapt(state, model, arch, **options) if imp.adapt else []
    except (ValueError, RuntimeError) as err:
        raise CheckpointError(contents.desc, one_line(err)) from None
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith(imp.head)}
        if not arch.fresh_head:
            what = (
                f"{src_nc} -> {model.num_classes} classes" if src_nc is not None else "no head in the source"
            )
            warnings.warn(
                f"{contents.desc}: re-initialised the classifier head '{imp.head.rstrip('.')}' "
                f"({imp.head_what}{what})",
                stacklevel=3,
            )
    state, fresh_frames = _frame_head_state(model, state, keep_head)
    check_weights(model, state, contents.desc)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if keep_head or not k.startswith(imp.head)]
    missing = [k for k in missing if not (fresh_frames and k.startswith(_FRAME_HEAD))]
    if missing or unexpected:
        name = imp.source_key or (lambda k, c: k)
        parts = ([f"missing keys {[name(k, contents) for k in missing[:5]]}"] if missing else []) + (
            [f"unexpected keys {[name(k, contents) for k in unexpected[:5]]}"] if unexpected else []
        )
        raise CheckpointError(contents.desc, f"does not fit the {imp.title} model: " + ", ".join(parts))
    end_warm_start(model)  # BatchNorm statistics are the source's (sed.models.norm)
    model.multi_label = multi if keep_head else False  # a new head: single-label until a task says otherwise
    model.pretrained_report = {
        "source": contents.desc,
        "format": arch.kind,
        "dropped": dropped,
        "adapted": notes,
        "reinitialised": ([] if keep_head or arch.fresh_head else [imp.head.rstrip(".")])
        + (["frame_head"] if fresh_frames else []),
    }
    log.info("loaded %s weights from %s (%s)", imp.family, contents.desc, "; ".join(notes) or "no adaptation")
    size = next((n for n in family(imp.family).sizes if model_entry(n).factory is factory), factory.__name__)
    model.sed_config = {"name": size, "kwargs": model.sed_kwargs()}
    return model


def import_pretrained(source, **overrides) -> nn.Module:
    """A model from a foreign ``source`` (short name, file, directory, hub id, contents): the importer of
    the family that claims it builds it; what no family claims is named in one line."""
    contents = resolve(source)
    fam = claimed_by(contents)
    if fam is None:
        what = "directory" if isinstance(contents.directory, Path) else "file"
        kinds = ", ".join(f.name for f in families() if f.importer)
        keys = [str(k) for k in list(contents.state)[:5]] if isinstance(contents.state, Mapping) else []
        raise CheckpointError(
            contents.desc, f"no model family claims this {what} (known formats: {kinds}); first keys {keys}"
        )
    return importer_of(family(fam)).build(contents, **overrides)
