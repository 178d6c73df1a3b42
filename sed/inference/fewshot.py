"""Few-shot enrolment of new classes: class prototypes on any clip model's embedding (``sedkit enroll``).

:func:`enroll` reads a *support set* -- a folder with one sub-folder per class, or a CSV/JSONL
manifest (:func:`sed.data.corpora.folder.folder_items` / :func:`~sed.data.corpora.folder.manifest_items`) --
embeds every file with the backbone (:meth:`sed.inference.classifier.Classifier.embed`; a file longer than
the backbone's clip is the mean of its clip-length windows, weighted by their valid samples) and
returns a :class:`~sed.models.prototype.PrototypeClassifier` whose prototypes are the classes' mean
embeddings, with a report. The model saves with :func:`sed.checkpoint.save_model` as a
self-contained checkpoint that ``sedkit classify`` and :class:`~sed.inference.classifier.Classifier`
load like any other.

- ``shots=N`` uses N files per class, chosen at random (``seed``) among the usable ones.
- A class with no usable file, or with fewer than N, is one :class:`~sed.errors.DatasetError`
  naming every such class; a file that cannot be read is reported (``report.skipped``, one line
  each, and ``on_error``) and left out.
- ``add_to`` (an existing prototype checkpoint or model) keeps its backbone, metric, scale and classes, the
  old prototypes bit for bit, and appends the support's classes (a class already there is an error).
- ``text`` names classes by sentences on a CLAP model (:mod:`sed.inference.fewshot_text`): text alone is a
  zero-shot checkpoint, text and support files of one class are combined (``text_weight``, 0.5 by
  default); the checkpoint's record (``EnrollReport.summary``) says where each class came from.

:func:`embed_items` (embeddings of :class:`~sed.data.clips.ClipItem` s, whole files or segments,
bad files reported) is shared with the episodic evaluation in :mod:`sed.inference.fewshot_eval`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sed.data.clips import ClipDataset, ClipItem
from sed.data.corpora.folder import folder_items, manifest_items
from sed.errors import DatasetError, SedError, short
from sed.inference.classifier import Classifier
from sed.inference.fewshot_text import mix, same_tower
from sed.inference.runtime import is_onnx
from sed.models.base import is_clip_model
from sed.models.loading import load_model
from sed.models.prototype import DEFAULT_SCALE, METRICS, PrototypeClassifier, build_prototype_classifier
from sed.models.zeroshot import DEFAULT_TEXT_WEIGHT, clap_contents, clap_sides

__all__ = ["EnrollReport", "embed_items", "enroll", "item_name", "load_backbone", "support_items"]

#: items embedded per call of Classifier.embed (segments of a manifest are read one chunk at a time)
CHUNK = 64


@dataclass
class EnrollReport:
    """What :func:`enroll` did: the classes it enrolled, the files of each, the files it skipped."""

    classes: list[str]  # the newly enrolled classes, in prototype order
    files: dict[str, list[str]]  # the files (or segments) averaged into each new prototype
    skipped: list[str] = field(default_factory=list)  # "file: reason", one per file left out
    kept: list[str] = field(default_factory=list)  # the classes of add_to, unchanged
    metric: str = "cosine"
    open_set: float | None = None
    embed_dim: int = 0
    sources: dict[str, str] = field(default_factory=dict)  # class: "audio", "text" or "text+audio"
    texts: dict[str, list[str]] = field(default_factory=dict)  # the descriptions of each class with text
    text_weight: float | None = None  # the weight of text in a text+audio class (None without text)
    text_source: str | None = None  # the CLAP model whose text tower embedded the texts
    previous: dict[str, Any] = field(default_factory=dict)  # the enrolment record of the checkpoint added to

    def summary(
        self, support: str | os.PathLike | None = None, shots: int | None = None, seed: int | None = None
    ) -> dict[str, Any]:
        """JSON metadata for the checkpoint's description (key ``fewshot``). ``classes`` says where each
        class's prototype came from (``from``: audio, text or text+audio; its ``files``, ``texts`` and
        ``text_weight``), the kept classes' entries carried over from the checkpoint added to."""
        classes = dict(self.previous.get("classes") or {}) if isinstance(self.previous, dict) else {}
        for c in self.classes:
            entry: dict[str, Any] = {
                "from": self.sources.get(c, "audio"),
                "files": len(self.files.get(c, [])),
            }
            if c in self.texts:
                entry["texts"] = list(self.texts[c])
            if entry["from"] == "text+audio":
                entry["text_weight"] = self.text_weight
            classes[c] = entry
        return {
            "support": None if support is None else os.fspath(support),
            "shots": shots,
            "seed": seed,
            "files_per_class": {c: len(f) for c, f in self.files.items()},
            "kept_classes": list(self.kept),
            "metric": self.metric,
            "open_set": self.open_set,
            "skipped": len(self.skipped),
            "classes": classes,
            "text_weight": self.text_weight,
            "text_source": self.text_source,
        }


# ---------------------------------------------------------------------------------- the support set
def support_items(support: str | os.PathLike) -> tuple[list[ClipItem], list[str]]:
    """(items, class names) of a support folder (one sub-folder per class; a class folder may be
    empty, which :func:`enroll` reports) or a single-label CSV/JSONL manifest."""
    root = Path(support)
    if root.is_dir():
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        try:
            return folder_items(root, names or None)
        except DatasetError as e:
            if names and e.path == os.fspath(root) and e.reason.startswith("no audio files"):
                return [], names  # every class folder is empty: enroll lists them all
            raise
    if root.is_file():
        items, names, multi = manifest_items(root)
        if multi:
            raise DatasetError(
                root, "a support manifest gives exactly one label per file (this one is multi-label)"
            )
        return items, names
    raise DatasetError(
        root, "support set not found (a folder with one sub-folder per class, or a .csv/.jsonl manifest)"
    )


def item_name(item: ClipItem) -> str:
    if item.start is None and item.end is None:
        return item.path
    start = "0" if item.start is None else f"{item.start:g}"
    end = "end" if item.end is None else f"{item.end:g}"
    return f"{item.path} [{start}-{end} s]"


def _source(item: ClipItem, sample_rate: int):
    """What Classifier.embed takes: the path of a whole file (read block-wise), or (name, wave) of a
    segment."""
    if item.start is None and item.end is None:
        return item.path
    ds = ClipDataset([replace(item, label=None)], [], sample_rate=sample_rate)
    return item_name(item), ds[0]["wave"]


def embed_items(
    clf: Classifier,
    items: Sequence[ClipItem],
    batch_size: int = 8,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[list[np.ndarray | None], list[str]]:
    """(an embedding or None per item, "name: reason" per item that failed). A file longer than the
    backbone's clip is embedded as the mean of its clip-length windows (weighted by valid samples)."""
    window = clf.clip_samples / clf.sample_rate if clf.clip_samples else None
    out: list[np.ndarray | None] = [None] * len(items)
    errors: list[str] = []
    for first in range(0, len(items), CHUNK):
        chunk = range(first, min(first + CHUNK, len(items)))
        sources, where = [], []
        for i in chunk:
            try:
                sources.append(_source(items[i], clf.sample_rate))
                where.append(i)
            except SedError as e:
                errors.append(str(e))
        if not sources:
            continue
        emb, results = clf.embed(sources, batch_size=batch_size, window=window, progress=progress)
        rows = iter(emb)
        for i, r in zip(where, results):
            if r.error:
                errors.append(r.error)
            else:
                out[i] = next(rows)
    return out, errors


# ---------------------------------------------------------------------------------- the backbone
def load_backbone(source: str | os.PathLike | nn.Module) -> nn.Module:
    """The clip model whose embedding holds the prototypes: any checkpoint :func:`load_model` reads
    (a prototype checkpoint gives its backbone), or a model. An exported ``.onnx`` file is refused:
    the prototype checkpoint carries the backbone's PyTorch weights."""
    if isinstance(source, nn.Module):
        model = source
    else:
        if is_onnx(source):
            raise ValueError(
                f"{source}: an exported .onnx file cannot be a backbone (the prototype checkpoint "
                "carries PyTorch weights); use the checkpoint it was exported from"
            )
        model, _ = load_model(source, kind="clip")
    if isinstance(model, PrototypeClassifier):
        model = model.backbone
    if not is_clip_model(model) or not hasattr(model, "sed_config"):
        raise ValueError(f"{type(model).__name__} is not a clip model built by sed to embed with")
    return model.eval()


def _prototype(source) -> tuple[PrototypeClassifier, dict]:
    """(the prototype checkpoint ``source``, its enrolment record or {})."""
    model, desc = (source, {}) if isinstance(source, nn.Module) else load_model(source)
    if not isinstance(model, PrototypeClassifier):
        raise ValueError(
            f"{source if not isinstance(source, nn.Module) else type(model).__name__} is not a prototype "
            "checkpoint (written by sedkit enroll); only those take more classes"
        )
    record = desc.get("fewshot") if isinstance(desc, dict) else None
    return model, record if isinstance(record, dict) else {}


# ---------------------------------------------------------------------------------- enrolment
def _choose(
    items: list[ClipItem],
    labels: list[str],
    shots: int | None,
    seed: int,
    clf: Classifier,
    batch_size: int,
    progress,
    on_error,
) -> tuple[dict[int, list[int]], dict[int, list[np.ndarray]], list[str]]:
    """Embed each class's files (in a seeded random order with ``shots``, until N of them are usable)."""
    by_class: dict[int, list[int]] = {k: [] for k in range(len(labels))}
    for i, it in enumerate(items):
        by_class[int(it.label)].append(i)
    if shots is not None:
        rng = np.random.default_rng(seed)
        by_class = {k: [idx[j] for j in rng.permutation(len(idx))] for k, idx in by_class.items()}
    cursor = dict.fromkeys(by_class, 0)
    used: dict[int, list[int]] = {k: [] for k in by_class}
    embs: dict[int, list[np.ndarray]] = {k: [] for k in by_class}
    skipped: list[str] = []
    while True:
        todo = []
        for k, idx in by_class.items():
            need = len(idx) if shots is None else shots - len(used[k])
            todo += idx[cursor[k] : cursor[k] + max(need, 0)]
            cursor[k] += max(need, 0)
        if not todo:
            return used, embs, skipped
        rows, errors = embed_items(clf, [items[i] for i in todo], batch_size, progress)
        for line in errors:
            skipped.append(line)
            if on_error is not None:
                on_error(line)
        for i, e in zip(todo, rows):
            if e is not None:
                used[int(items[i].label)].append(i)
                embs[int(items[i].label)].append(e)
        if shots is None:
            return used, embs, skipped


def _backbone_and_text(backbone_source, old, add_to, text_source, text):
    """(the backbone, the CLAP text tower or None) of an enrolment (see :func:`enroll`)."""
    where = old.backbone if old is not None else backbone_source
    if text is None:
        return load_backbone(where), None
    if text_source is None:
        if old is not None or isinstance(backbone_source, nn.Module):
            raise ValueError(
                f"{add_to if old is not None else 'the backbone model'} holds no text tower: name the CLAP "
                "model it came from for the text (text_source=..., sedkit enroll --text-from CLAP)"
            )
        text_source = clap_contents(
            backbone_source,
            "give the CLAP model it came from as the backbone, or as the text source "
            "(sedkit enroll --text-from CLAP, text_source=...)",
        )
        where = text_source
    encoder, tower = clap_sides(text_source)
    if where is text_source:
        return load_backbone(tower), encoder
    backbone = load_backbone(where)
    same_tower(backbone, tower, add_to if old is not None else backbone_source, text_source)
    return backbone, encoder


def enroll(
    support: str | os.PathLike | None = None,
    backbone_source: str | os.PathLike | nn.Module | None = None,
    metric: str | None = None,
    shots: int | None = None,
    open_set: float | None = None,
    add_to: str | os.PathLike | nn.Module | None = None,
    seed: int = 0,
    scale: float | None = None,
    batch_size: int = 8,
    device: str = "auto",
    progress: Callable[[Iterable], Iterable] | None = None,
    on_error: Callable[[str], None] | None = None,
    text: Mapping[str, Sequence[str]] | None = None,
    text_weight: float = DEFAULT_TEXT_WEIGHT,
    text_source: str | os.PathLike | None = None,
) -> tuple[PrototypeClassifier, EnrollReport]:
    """Enrol the classes of ``support`` (see the module docstring) and/or the classes named by ``text``
    (``{label: [descriptions]}``, :func:`sed.inference.fewshot_text.parse_text`) on the embedding of
    ``backbone_source`` (any source :func:`load_model` reads, or a model), or append them to the
    prototype checkpoint ``add_to``. ``metric`` is ``cosine`` (default; the only one with text) or
    ``euclidean``; ``open_set`` a threshold for the ``unknown`` answer (:mod:`sed.models.prototype`);
    ``scale`` the cosine scale (default 10; with text, the CLAP model's ``exp(logit_scale_a)``; with
    ``add_to``, its own). Text needs a CLAP source for its text tower: ``text_source``, by default
    ``backbone_source`` (``add_to`` holds none); another backbone must be that CLAP model's audio tower.
    A class with text and support files is ``combine(text prototype, audio mean, text_weight)``
    (:func:`sed.models.zeroshot.combine`). ``on_error`` gets each skipped file's one-line report at once.
    Returns (the model, on the CPU and in eval mode; an :class:`EnrollReport`)."""
    if shots is not None and (isinstance(shots, bool) or int(shots) != shots or shots < 1):
        raise ValueError(f"shots must be a whole number >= 1, got {shots}")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if (backbone_source is None) == (add_to is None):
        raise ValueError("give a backbone to enrol on, or a prototype checkpoint to add to (not both)")
    if support is None and not text:
        raise ValueError("give a support set, text descriptions, or both")
    if text is not None:
        text = {str(c): list(ds) for c, ds in text.items()}
        if not text or not all(text.values()):
            raise ValueError("text needs at least one description for each class")
        if not 0.0 <= text_weight <= 1.0:
            raise ValueError(f"the text weight must be in [0, 1], got {text_weight}")
    old, record = (None, {}) if add_to is None else _prototype(add_to)
    if old is not None:
        if metric not in (None, old.metric):
            raise ValueError(f"{add_to} compares by {old.metric}; its new classes cannot use {metric}")
        if scale not in (None, old.head.scale):
            raise ValueError(
                f"{add_to} has cosine scale {old.head.scale}; its new classes cannot use {scale}"
            )
        metric, scale = old.metric, old.head.scale
        open_set = old.open_set if open_set is None else open_set
    if text is not None and metric == "euclidean":
        where = f"{add_to} compares by euclidean distance: " if old is not None else ""
        raise ValueError(f"{where}text prototypes compare by cosine (no euclidean metric with text)")
    backbone, encoder = _backbone_and_text(backbone_source, old, add_to, text_source, text)
    if scale is None and encoder is not None:
        scale = encoder.scale
    metric, scale = metric or "cosine", DEFAULT_SCALE if scale is None else float(scale)
    items, labels = support_items(support) if support is not None else ([], [])
    kept = list(old.class_names or []) if old is not None else []
    taken = [c for c in dict.fromkeys([*labels, *(text or {})]) if c in kept]
    if taken:
        raise DatasetError(
            support if support is not None else "text",
            f"class(es) already enrolled in {add_to}: {', '.join(map(short, taken))} "
            "(enrol them under other names)",
        )
    clf = Classifier(
        backbone, {"sample_rate": backbone.sample_rate, "clip_samples": backbone.clip_samples}, device=device
    )
    used, embs, skipped = _choose(items, labels, shots, seed, clf, batch_size, progress, on_error)
    need = shots or 1
    short_classes = [
        f"{short(labels[k])} ({len(used[k])} usable of {sum(int(it.label) == k for it in items)} files)"
        for k in range(len(labels))
        if len(used[k]) < need
    ]
    if short_classes:
        raise DatasetError(
            support,
            f"{len(short_classes)} class(es) have fewer than {need} usable file(s): "
            + ", ".join(short_classes),
        )
    means = {
        labels[k]: torch.from_numpy(np.mean(np.stack(embs[k]).astype(np.float64), axis=0).astype(np.float32))
        for k in range(len(labels))
    }
    backbone.cpu()
    names, new, sources = mix(means, encoder, text, text_weight)
    prototypes = new if old is None else torch.cat([old.prototypes.detach().cpu(), new])
    unknown = old._kwargs["unknown_label"] if old is not None else "unknown"
    if open_set is not None and unknown in names:
        raise DatasetError(
            support if support is not None else "text",
            f"{short(unknown)} is the open-set answer; it cannot be an enrolled class",
        )
    model = build_prototype_classifier(
        backbone,
        prototypes,
        kept + names,
        metric=metric,
        scale=scale,
        open_set=open_set,
        unknown_label=unknown,
    )
    files = {labels[k]: [item_name(items[i]) for i in used[k]] for k in range(len(labels))}
    extra = {"sources": sources, "texts": dict(text or {}), "previous": record}
    if encoder is not None:
        extra.update(text_weight=text_weight, text_source=str(encoder.desc))
    return model, EnrollReport(names, files, skipped, kept, metric, open_set, model.embed_dim, **extra)
