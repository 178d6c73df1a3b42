"""Zero-shot classes named by text: text prototypes on a CLAP model's audio embedding.

A class named by text needs no example: its *text prototype* is the L2-normalised text embedding of its
prompt (``template.format(label)``, by default ``"This is a sound of {}."``, transformers'
``zero-shot-audio-classification`` pipeline's), or the normalised mean of the embeddings of several
descriptions. :func:`zero_shot_classifier` puts those prototypes on the checkpoint's audio tower as a
:class:`~sed.models.prototype.PrototypeClassifier` (cosine, scale ``exp(logit_scale_a)``): its logits are
``ClapModel``'s ``logits_per_audio`` and its softmax the pipeline's scores. The result is a checkpoint like
any other (classify, windows, ensembles, ONNX export, more classes by ``sedkit enroll --add``).

:func:`combine` is the one rule that mixes text and audio prototypes (``sedkit enroll --text`` with examples):
``weight * t + (1 - weight) * a`` of the unit text prototype ``t`` and the unit mean audio embedding ``a``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sed.errors import CheckpointError, DatasetError, SedError, one_line, short
from sed.models.family import find_weights, weights_table
from sed.models.pretrained.build import claimed_by, import_pretrained
from sed.models.pretrained.clap import ClapText, text_encoder
from sed.models.pretrained.sources import HUB_ID, Contents, _read_json, resolve
from sed.models.prototype import PrototypeClassifier, build_prototype_classifier

__all__ = [
    "DEFAULT_TEMPLATE",
    "DEFAULT_TEXT_WEIGHT",
    "NAME_THE_CLAP",
    "clap_contents",
    "clap_sides",
    "clap_source",
    "clap_text",
    "combine",
    "prompts",
    "read_labels",
    "text_prototypes",
    "zero_shot_classifier",
]

DEFAULT_TEMPLATE = "This is a sound of {}."
#: the family whose models take text labels
CLAP = "clap"
#: the largest labels file read (a list of class names, not a corpus)
MAX_LABELS_BYTES = 1_000_000
#: the weight of the text prototype when a class has text and audio examples
DEFAULT_TEXT_WEIGHT = 0.5


def prompts(labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """``template.format(label)`` of each label; a ValueError unless ``template`` has exactly one ``{}``."""
    if not isinstance(template, str) or template.count("{}") != 1 or template.count("{") != 1:
        raise ValueError(f"template must hold exactly one {{}} for the label, got {template!r}")
    bad = [lab for lab in labels if not str(lab).strip()]
    if bad or not labels:
        raise ValueError("labels must be non-empty text" if labels else "give at least one label")
    twice = [lab for lab, n in Counter(labels).items() if n > 1]
    if twice:
        raise ValueError(f"label {twice[0]!r} is given twice")
    return [template.replace("{}", str(lab)) for lab in labels]


def read_labels(path: str | os.PathLike) -> list[str]:
    """The labels of a text file, one per line (UTF-8; blank lines and lines starting with ``#`` skipped); a
    one-line DatasetError naming the file when it cannot be read, holds no label or repeats one."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_LABELS_BYTES + 1)
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(path, f"cannot read the labels file ({one_line(err)})") from None
    if len(text) > MAX_LABELS_BYTES:
        raise DatasetError(path, f"is larger than {MAX_LABELS_BYTES // 1_000_000} MB: not a labels file")
    labels = [line.strip() for line in text.splitlines()]
    labels = [lab for lab in labels if lab and not lab.startswith("#")]
    if not labels:
        raise DatasetError(path, "holds no label (one label per line)")
    twice = sorted(lab for lab, n in Counter(labels).items() if n > 1)
    if twice:
        raise DatasetError(path, f"repeats the label {short(twice[0])}")
    return labels


def text_prototypes(text: ClapText, descriptions: Mapping[str, Sequence[str]]) -> torch.Tensor:
    """``[C, D]`` unit text prototypes, one per class in ``descriptions``' order: the normalised mean of the
    normalised embeddings of its descriptions (one description: its embedding)."""
    flat = [d for ds in descriptions.values() for d in ds]
    if any(not ds for ds in descriptions.values()):
        raise ValueError("every class needs at least one description")
    emb, rows, i = text.encode(flat), [], 0
    for ds in descriptions.values():
        rows.append(F.normalize(emb[i : i + len(ds)].mean(0), dim=-1))
        i += len(ds)
    return torch.stack(rows)


def combine(text: torch.Tensor, audio: torch.Tensor, weight: float = DEFAULT_TEXT_WEIGHT) -> torch.Tensor:
    """``weight * normalize(text) + (1 - weight) * normalize(audio)`` row by row (``[C, D]`` each)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the text weight must be in [0, 1], got {weight}")
    return weight * F.normalize(text.float(), dim=-1) + (1.0 - weight) * F.normalize(audio.float(), dim=-1)


#: what a refusal of a sed checkpoint as a text source tells to do instead
NAME_THE_CLAP = (
    "name classes by text with the CLAP model it came from (a clap-* short name, hub id or directory)"
)


def clap_contents(source, way_out: str = NAME_THE_CLAP) -> Contents:
    """``source`` read once (:func:`~sed.models.pretrained.sources.resolve`); a sed checkpoint, which holds no
    text tower, is one CheckpointError line ending in ``way_out``."""
    contents = resolve(source)
    if contents.sed is not None:
        raise CheckpointError(contents.desc, f"is a sed checkpoint, which holds no text tower: {way_out}")
    return contents


def clap_sides(source, way_out: str = NAME_THE_CLAP, **overrides) -> tuple[ClapText, nn.Module]:
    """(the text tower, the audio tower in eval mode; ``overrides`` go to the audio tower) of the CLAP
    ``source`` (short name, hub id, directory, or its contents), read once."""
    contents = clap_contents(source, way_out)
    return text_encoder(contents), import_pretrained(contents, **overrides).eval()


def clap_source(source: str | os.PathLike) -> str | os.PathLike | Contents | None:
    """``source`` as a zero-shot load takes it when it is a CLAP model, else None; judged without reading its
    weights where it can: a directory by its ``config.json``, a short name or a declared hub id by its family.
    An undeclared hub id is read to know, and its contents are returned so that the load reads it only once.
    A file is never one: a sed checkpoint (a saved zero-shot classifier too) and an ``.onnx`` graph hold no
    text tower."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file() or text.lower().endswith(".onnx"):
        return None
    if path.is_dir():
        try:
            config = _read_json(path / "config.json", path)
        except SedError:
            return None  # not a model directory this can read: its load says why
        found = config is not None and claimed_by(Contents(text, {}, config=config, directory=path)) == CLAP
        return source if found else None
    declared = find_weights(text)
    if declared is None and HUB_ID.match(text):
        hub = next((w for w in weights_table() if f"hf://{text}" in w.sources), None)
        declared = find_weights(hub.name) if hub else None
        if declared is None:
            try:
                contents = resolve(text)
            except SedError:
                return source  # cannot be fetched: the load with the labels says so in one line
            return contents if claimed_by(contents) == CLAP else None
    return source if declared is not None and declared[0].name == CLAP else None


def zero_shot_classifier(
    source: str | os.PathLike | Contents,
    labels: Sequence[str] | None = None,
    template: str = DEFAULT_TEMPLATE,
    descriptions: Mapping[str, Sequence[str]] | None = None,
    **overrides,
) -> PrototypeClassifier:
    """A prototype classifier of the CLAP checkpoint ``source`` (short name, hub id, directory) whose classes
    are ``labels`` (prompted with ``template``) or the keys of ``descriptions`` (each class's own texts).
    Its cosine scale is the checkpoint's ``exp(logit_scale_a)``; the model is on the CPU in eval mode.
    ``overrides`` go to the audio tower (e.g. ``fuse_short_clips``, :class:`~sed.models.clap.ClapAudio`)."""
    if (labels is None) == (descriptions is None):
        raise ValueError("give labels (with a template) or descriptions, not both")
    contents = clap_contents(source)
    text, audio = clap_sides(contents, **overrides)
    if descriptions is None:
        descriptions = dict(zip(labels, ([p] for p in prompts(labels, template))))
    model = build_prototype_classifier(
        audio, text_prototypes(text, descriptions), list(descriptions), metric="cosine", scale=text.scale
    )
    model.zero_shot = {"source": str(contents.desc), "template": template if labels is not None else None}
    return model.eval()


def clap_text(source: str | os.PathLike | Contents) -> ClapText:
    """The text side of a CLAP checkpoint (for search and enrolment by text)."""
    return text_encoder(clap_contents(source))
