"""The episodic few-shot evaluation (what ``sedkit fewshot-eval`` runs).

The standard protocol: from the embeddings of a labelled split, draw ``episodes`` random tasks;
each takes ``ways`` classes and, from each class, ``shots`` support clips and ``queries`` query
clips, all distinct (:func:`sample_episodes`; the same ``seed`` draws the same episodes). Every
method classifies the episode's ``ways * queries`` queries among its ``ways`` classes from the
support alone; its score is the accuracy averaged over episodes with the 95 % interval
``1.96 * std / sqrt(episodes)`` (std over episodes, ddof 0 as in the usual few-shot code):

- ``prototype_cosine`` / ``prototype_euclidean``: nearest class mean of the support embeddings, by
  cosine similarity or squared Euclidean distance (:func:`sed.models.prototype.prototype_logits`,
  exactly what an enrolled :class:`~sed.models.prototype.PrototypeClassifier` computes);
- ``logistic``: a logistic-regression probe (:func:`sed.models.linear_probe.fit_logistic`) fitted on
  the L2-normalised support embeddings;
- ``zero_shot`` (a CLAP model, ``sedkit fewshot-eval --zero-shot``): the nearest *text* prototype by cosine,
  the class names prompted with the template (:func:`class_prompts`: underscores read as spaces); it uses
  no support clip, and scores the same queries;
- ``combined``: the nearest :func:`sed.models.zeroshot.combine` of the text prototype and the support mean
  (``text_weight``, 0.5 by default), what ``sedkit enroll --text`` with examples enrols.

:func:`split_embeddings` embeds a data config's split once (a ``sedkit fit`` YAML's ``data:``
section or AudioDataModule init args, with ``--data.init_args.x=y`` overrides, read as ``sedkit fit`` reads
them: :func:`sed.training.lightning_cli.datamodule_of`),
each clip as in enrolment (:func:`sed.inference.fewshot.embed_items`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sed.inference.classifier import Classifier
from sed.inference.fewshot import embed_items, item_name
from sed.models.linear_probe import fit_logistic, logistic_logits
from sed.models.prototype import prototype_logits
from sed.models.zeroshot import (
    DEFAULT_TEMPLATE,
    DEFAULT_TEXT_WEIGHT,
    clap_text,
    combine,
    prompts,
    text_prototypes,
)
from sed.training.lightning_cli import datamodule_of

__all__ = [
    "EVAL_METHODS",
    "Episode",
    "SplitEmbeddings",
    "TEXT_METHODS",
    "check_episodes",
    "class_prompts",
    "class_text_prototypes",
    "fewshot_eval",
    "sample_episodes",
    "split_embeddings",
]

#: A progress bar: ``progress(iterable, total=, desc=, unit=)`` yields the items (Console.progress).
Progress = Callable[..., Iterable]
EVAL_METHODS = ("prototype_cosine", "prototype_euclidean", "logistic")
#: the methods that need text prototypes of the classes (``fewshot_eval(text=...)``)
TEXT_METHODS = ("zero_shot", "combined")
SPLITS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class Episode:
    """One k-way n-shot task: indices into the labels of the clips it uses."""

    classes: np.ndarray  # [ways] class ids
    support: np.ndarray  # [ways, shots]
    query: np.ndarray  # [ways, queries]


def _positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")


#: The per-class counts an episode refusal lists, at most.
_LISTED = 12


def check_episodes(
    labels: Sequence[int],
    ways: int,
    shots: int,
    queries: int,
    names: Sequence[str] | None = None,
    what: str = "the data",
) -> np.ndarray:
    """The classes with at least ``shots + queries`` clips (sorted ids); ValueError in one line, with
    the clips per class (by ``names``), when fewer than ``ways`` classes have that many."""
    _positive(ways=ways, shots=shots, queries=queries)
    ids, counts = np.unique(np.asarray(labels, dtype=np.int64), return_counts=True)
    eligible = ids[counts >= shots + queries]
    if len(eligible) < ways:
        order = np.argsort(-counts, kind="stable")[:_LISTED]
        listed = ", ".join(
            f"{names[i] if names is not None and 0 <= i < len(names) else i} {counts[j]}"
            for j, i in ((j, int(ids[j])) for j in order)
        )
        more = f", ... ({len(ids)} classes)" if len(ids) > _LISTED else ""
        raise ValueError(
            f"{ways}-way {shots}-shot episodes with {queries} queries need {ways} classes of at least "
            f"{shots + queries} clips; {what} has {len(eligible)} such class(es) (clips per class: "
            f"{listed or 'none'}{more})"
        )
    return eligible


def sample_episodes(
    labels: Sequence[int], ways: int, shots: int, queries: int, episodes: int, seed: int = 0
) -> list[Episode]:
    """``episodes`` random episodes, reproducible from ``seed``. Only classes with at least
    ``shots + queries`` clips are drawn (:func:`check_episodes`: ValueError when fewer than ``ways``
    classes have that many); an episode's classes are distinct and its clips too, so support and
    query never share a clip."""
    _positive(episodes=episodes)
    eligible = check_episodes(labels, ways, shots, queries)
    labels = np.asarray(labels)
    members = {int(c): np.flatnonzero(labels == c) for c in eligible}
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(episodes):
        classes = rng.choice(eligible, size=ways, replace=False)
        picks = np.stack([rng.choice(members[int(c)], size=shots + queries, replace=False) for c in classes])
        out.append(Episode(classes, picks[:, :shots], picks[:, shots:]))
    return out


def class_prompts(names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """The zero-shot prompt of each class name: underscores read as spaces (``dog_bark`` -> ``dog bark``),
    then ``template`` (:func:`sed.models.zeroshot.prompts`)."""
    return prompts([str(n).replace("_", " ").strip() for n in names], template)


def class_text_prototypes(source, names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> torch.Tensor:
    """``[C, D]`` unit text prototypes of the class ``names`` (:func:`class_prompts`) by the text tower of the
    CLAP model ``source`` (a :class:`~sed.models.pretrained.clap.ClapText`, or what
    :func:`~sed.models.zeroshot.clap_text` takes)."""
    text = source if hasattr(source, "encode") else clap_text(source)
    return text_prototypes(text, {n: [p] for n, p in zip(names, class_prompts(names, template))})


def _episode_accuracy(
    method: str, emb: torch.Tensor, ep: Episode, l2: float, steps: int, text, weight: float
) -> float:
    ways, shots = ep.support.shape
    support = emb[torch.as_tensor(ep.support.reshape(-1))]
    query = emb[torch.as_tensor(ep.query.reshape(-1))]
    y_support = torch.arange(ways).repeat_interleave(shots)
    y_query = torch.arange(ways).repeat_interleave(ep.query.shape[1])
    if method == "logistic":
        w, b = fit_logistic(F.normalize(support, dim=-1), y_support, ways, l2=l2, steps=steps)
        logits = logistic_logits(F.normalize(query, dim=-1), w, b)
    elif method in TEXT_METHODS:
        prototypes = text[torch.as_tensor(ep.classes, dtype=torch.long)]
        if method == "combined":
            prototypes = combine(prototypes, support.reshape(ways, shots, -1).mean(1), weight)
        logits = prototype_logits(query, prototypes, "cosine")
    else:
        prototypes = support.reshape(ways, shots, -1).mean(1)
        logits = prototype_logits(query, prototypes, method.removeprefix("prototype_"))
    return float((logits.argmax(-1) == y_query).double().mean())


def fewshot_eval(
    embeddings,
    labels: Sequence[int],
    ways: int = 5,
    shots: int = 5,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
    methods: Sequence[str] = EVAL_METHODS,
    l2: float = 1e-2,
    steps: int = 100,
    progress: Progress | None = None,
    text=None,
    text_weight: float = DEFAULT_TEXT_WEIGHT,
) -> dict[str, Any]:
    """Every method on the same episodes (:func:`sample_episodes`) of ``embeddings [N, D]`` with class
    ids ``labels [N]``. Returns ``{"ways", "shots", "queries", "episodes", "seed", "clips", "classes",
    "methods": [{"method", "mean", "ci95", "std", "accuracies": [per episode]}]}``; ``l2``/``steps``
    are the logistic probe's. ``text`` (``[classes, D]``, row ``k`` the text prototype of class id ``k``,
    :func:`class_text_prototypes`) is what :data:`TEXT_METHODS` need; ``text_weight`` is ``combined``'s.
    ``progress(iterable, total=, desc=, unit=)`` (a bar) wraps each method's episodes."""
    known = EVAL_METHODS + TEXT_METHODS
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(known)}")
    emb = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    if emb.dim() != 2 or emb.shape[0] != len(labels):
        raise ValueError(f"embeddings {tuple(emb.shape)} do not match {len(labels)} labels")
    if any(m in TEXT_METHODS for m in methods):
        if text is None:
            raise ValueError(f"{', '.join(TEXT_METHODS)} need text prototypes of the classes (a CLAP model)")
        text = torch.as_tensor(text, dtype=torch.float32)
        if (
            text.dim() != 2
            or text.shape[1] != emb.shape[1]
            or text.shape[0] <= int(np.max(labels, initial=0))
        ):
            raise ValueError(
                f"text prototypes {tuple(text.shape)} do not cover the {int(np.max(labels, initial=0)) + 1} "
                f"class ids of {emb.shape[1]}-d embeddings"
            )
        if not 0.0 <= text_weight <= 1.0:
            raise ValueError(f"the text weight must be in [0, 1], got {text_weight}")
    eps = sample_episodes(labels, ways, shots, queries, episodes, seed)
    rows = []
    for method in methods:
        shown = progress(eps, total=len(eps), desc=method, unit="episode") if progress is not None else eps
        acc = np.array([_episode_accuracy(method, emb, ep, l2, steps, text, text_weight) for ep in shown])
        std = float(acc.std())
        rows.append(
            {
                "method": method,
                "mean": float(acc.mean()),
                "ci95": 1.96 * std / float(np.sqrt(len(acc))),
                "std": std,
                "accuracies": acc.tolist(),
            }
        )
    return {
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "episodes": episodes,
        "seed": seed,
        "clips": int(emb.shape[0]),
        "classes": int(len(np.unique(np.asarray(labels)))),
        "methods": rows,
        **({"text_weight": text_weight} if any(m in TEXT_METHODS for m in methods) else {}),
    }


# ---------------------------------------------------------------------------------- a data config's split
@dataclass
class SplitEmbeddings:
    embeddings: np.ndarray  # [N, D] of the clips that could be read
    labels: np.ndarray  # [N] class ids
    label_names: list[str]
    files: list[str]  # the clip of each row
    skipped: list[str]  # "file: reason" of each clip left out


def _embedded(
    clf: Classifier, items: list, batch_size: int, errors: list[str]
) -> Iterator[np.ndarray | None]:
    """An embedding (or None) per item, in order, embedding ``batch_size`` items at a time (so a
    progress bar over the items moves as they are done); the reasons of failed items go to ``errors``."""
    for first in range(0, len(items), batch_size):
        rows, bad = embed_items(clf, items[first : first + batch_size], batch_size)
        errors += bad
        yield from rows


def split_embeddings(
    config: str | os.PathLike,
    backbone: str | os.PathLike,
    split: str = "test",
    batch_size: int = 8,
    device: str = "auto",
    progress: Progress | None = None,
    on_error: Callable[[str], None] | None = None,
    ways: int | None = None,
    shots: int | None = None,
    queries: int | None = None,
    overrides: Sequence[str] = (),
) -> SplitEmbeddings:
    """Embeddings of every clip of ``split`` (``train``, ``val``, ``test`` or ``all``) of the data
    config, computed once with ``backbone`` (any source :class:`Classifier` loads, ``.onnx`` included).
    A clip listed twice is embedded once; clips that cannot be read are reported and left out.

    With ``ways``, ``shots`` and ``queries`` the split's labels are checked for such episodes
    (:func:`check_episodes`, ValueError) before the backbone is loaded or anything is embedded.
    ``progress(iterable, total=, desc=, unit=)`` (a bar) wraps the clips as they are embedded."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    dm = datamodule_of(config, overrides)
    if getattr(dm, "hparams", {}).get("source") == "shards" or not hasattr(dm, "splits"):
        raise ValueError("fewshot-eval reads clip corpora (folder, manifest, esc50), not shards")
    if dm.is_multi_label:
        raise ValueError("few-shot episodes need single-label data; this data config is multi-label")
    items = list(dm.items) if split == "all" else list(dm.splits[split])
    items = list({(it.path, it.start, it.end): it for it in items}.values())
    if ways is not None and shots is not None and queries is not None:
        check_episodes(
            [int(it.label) for it in items], ways, shots, queries, dm.label_names, f"the {split} split"
        )
    clf = Classifier.from_pretrained(backbone, device=device, need_classes=False)  # an embedding is enough
    errors: list[str] = []
    rows = _embedded(clf, items, batch_size, errors)
    if progress is not None:
        rows = progress(rows, total=len(items), desc="embed", unit="file")
    rows = list(rows)
    for line in errors:
        if on_error is not None:
            on_error(line)
    ok = [i for i, e in enumerate(rows) if e is not None]
    width = rows[ok[0]].shape[-1] if ok else 0
    return SplitEmbeddings(
        np.stack([rows[i] for i in ok]) if ok else np.zeros((0, width), np.float32),
        np.array([int(items[i].label) for i in ok], dtype=np.int64),
        dm.label_names,
        [item_name(items[i]) for i in ok],
        errors,
    )
