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
- ``add_to`` (an existing prototype checkpoint or model) keeps its backbone, metric and classes, the
  old prototypes bit for bit, and appends the support's classes (a class already there is an error).

:func:`embed_items` (embeddings of :class:`~sed.data.clips.ClipItem` s, whole files or segments,
bad files reported) is shared with the episodic evaluation in :mod:`sed.inference.fewshot_eval`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
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
from sed.inference.runtime import is_onnx
from sed.models.base import is_clip_model
from sed.models.loading import load_model
from sed.models.prototype import DEFAULT_SCALE, METRICS, PrototypeClassifier, build_prototype_classifier

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

    def summary(
        self, support: str | os.PathLike | None = None, shots: int | None = None, seed: int | None = None
    ) -> dict[str, Any]:
        """JSON metadata for the checkpoint's description (key ``fewshot``)."""
        return {
            "support": None if support is None else os.fspath(support),
            "shots": shots,
            "seed": seed,
            "files_per_class": {c: len(f) for c, f in self.files.items()},
            "kept_classes": list(self.kept),
            "metric": self.metric,
            "open_set": self.open_set,
            "skipped": len(self.skipped),
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


def _prototype(source) -> PrototypeClassifier:
    model = source if isinstance(source, nn.Module) else load_model(source)[0]
    if not isinstance(model, PrototypeClassifier):
        raise ValueError(
            f"{source if not isinstance(source, nn.Module) else type(model).__name__} is not a prototype "
            "checkpoint (written by sedkit enroll); only those take more classes"
        )
    return model


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


def enroll(
    support: str | os.PathLike,
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
) -> tuple[PrototypeClassifier, EnrollReport]:
    """Enrol the classes of ``support`` (see the module docstring) on the embedding of
    ``backbone_source`` (any source :func:`load_model` reads, or a model), or append them to the
    prototype checkpoint ``add_to``. ``metric`` is ``cosine`` (default) or ``euclidean``; ``open_set``
    a threshold for the ``unknown`` answer (:mod:`sed.models.prototype`); ``scale`` the cosine scale
    (default 10). ``on_error`` gets each skipped file's one-line report as it happens.
    Returns (the model, on the CPU and in eval mode; an :class:`EnrollReport`)."""
    if shots is not None and (isinstance(shots, bool) or int(shots) != shots or shots < 1):
        raise ValueError(f"shots must be a whole number >= 1, got {shots}")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if (backbone_source is None) == (add_to is None):
        raise ValueError("give a backbone to enrol on, or a prototype checkpoint to add to (not both)")
    old = None if add_to is None else _prototype(add_to)
    if old is not None:
        if metric not in (None, old.metric):
            raise ValueError(f"{add_to} compares by {old.metric}; its new classes cannot use {metric}")
        if scale not in (None, old.head.scale):
            raise ValueError(
                f"{add_to} has cosine scale {old.head.scale}; its new classes cannot use {scale}"
            )
        metric, scale = old.metric, old.head.scale
        open_set = old.open_set if open_set is None else open_set
    backbone = load_backbone(old.backbone if old is not None else backbone_source)
    metric, scale = metric or "cosine", DEFAULT_SCALE if scale is None else float(scale)
    items, labels = support_items(support)
    kept = list(old.class_names or []) if old is not None else []
    taken = [c for c in labels if c in kept]
    if taken:
        raise DatasetError(
            support,
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
    new = torch.from_numpy(
        np.stack([np.mean(np.stack(embs[k]).astype(np.float64), axis=0) for k in range(len(labels))]).astype(
            np.float32
        )
    )
    backbone.cpu()
    prototypes = new if old is None else torch.cat([old.prototypes.detach().cpu(), new])
    unknown = old._kwargs["unknown_label"] if old is not None else "unknown"
    if open_set is not None and unknown in labels:
        raise DatasetError(
            support, f"{short(unknown)} is the open-set answer; it cannot be an enrolled class"
        )
    model = build_prototype_classifier(
        backbone,
        prototypes,
        kept + labels,
        metric=metric,
        scale=scale,
        open_set=open_set,
        unknown_label=unknown,
    )
    files = {labels[k]: [item_name(items[i]) for i in used[k]] for k in range(len(labels))}
    return model, EnrollReport(labels, files, skipped, kept, metric, open_set, model.embed_dim)
