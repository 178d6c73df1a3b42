"""Model ensembles: max voting, averaging, weighted averaging and rank averaging of member scores.

Every member gives a score matrix ``[N, C]`` (N clips, C classes) of probabilities -- softmax outputs for
single-label tasks, sigmoid outputs for multi-label ones -- as a numpy array or a torch tensor.
:func:`combine` turns the list of M matrices into one ``[N, C]`` float64 matrix:

``"vote"`` -- max voting (majority wins).
    Single-label: every model casts one hard vote, its argmax class; the class with the most votes
    wins. A tie between classes with equally many votes goes to the tied class with the largest
    probability summed over the models (then to the lowest class index). The output is **one-hot**:
    1 for the winning class of each row, 0 elsewhere (so ``argmax`` gives the ensemble's prediction).
    The raw vote fractions are available from :func:`vote_counts`.
    Multi-label (``multi_label=True``): each model votes "present" for class c when its probability is
    ``>= threshold``; the class is present when more than half of the models vote for it. An exact tie
    (even M, half the votes) is settled by the models' mean probability ``>= threshold``. The output is
    the 0/1 decision matrix.
``"average"`` -- the mean of the members' probabilities.
``"weighted"`` -- weighted mean, ``sum_m w_m P_m`` with the weights normalised to sum 1. The weights are
    given (``weights=``), or derived from validation ``metrics=`` in proportion to the metric
    (``w_m = metric_m / sum(metric)``, so a better model gets a higher weight).
``"rank"`` -- rank averaging: the models are ordered by their validation metric, the worst gets rank 1
    and the best rank M, and ``w_m = rank_m / sum(ranks)`` (``sum(ranks) = M (M + 1) / 2``); then the
    weighted mean as above. Equal metrics share the average of their ranks. Needs ``metrics=``.

``average``, ``weighted`` and ``rank`` act element-wise, so they are the same for single- and
multi-label scores; ``multi_label`` and ``threshold`` only matter to ``vote``. Metrics are
"higher is better" unless ``higher_is_better=False`` (e.g. a validation loss), which only ``rank``
supports.

:class:`EnsembleClassifier` scores inputs with every member (:meth:`sed.inference.Classifier.score`) and
combines the members' probabilities row by row (clip scores, and window scores in window mode), behind
:class:`~sed.inference.Classifier`'s API (``sedkit classify --ensemble``);
:func:`~sed.inference.ensemble_weights.ensemble_options` reads ``--weights``.

:func:`evaluate_members` scores every member on validation labels, giving the ``metrics`` for
``weighted``/``rank``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from sed.audio.io import resample
from sed.inference.classifier import Classifier, FileResult, Predictor, Source

__all__ = [
    "METHODS",
    "EnsembleClassifier",
    "check_members",
    "combine",
    "evaluate_members",
    "vote_counts",
    "weights_from_metrics",
]

METHODS = ("vote", "average", "weighted", "rank")
_WEIGHT_METHODS = ("rank", "proportional")


def combine(
    scores: Sequence,
    method: str = "average",
    weights: Sequence[float] | None = None,
    metrics: Sequence[float] | None = None,
    multi_label: bool = False,
    threshold: float = 0.5,
    higher_is_better: bool = True,
) -> np.ndarray:
    """Combine M members' ``[N, C]`` probability matrices into one ``[N, C]`` float64 matrix (module
    docstring).

    ``weights`` only with ``"weighted"``; ``metrics`` with ``"weighted"`` (instead of weights) or ``"rank"``
    (required). Bad input raises ``ValueError``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; choose one of {', '.join(METHODS)}")
    mats = _stack(scores)  # [M, N, C]
    m = mats.shape[0]
    if method in ("vote", "average", "rank") and weights is not None:
        raise ValueError(f"method {method!r} takes no weights (only 'weighted' does)")
    if method in ("vote", "average") and metrics is not None:
        raise ValueError(f"method {method!r} takes no metrics (only 'weighted' and 'rank' do)")

    if method == "vote":
        return _vote(mats, multi_label, threshold)
    if method == "average":
        return mats.mean(axis=0)
    if method == "weighted":
        if weights is not None and metrics is not None:
            raise ValueError("method 'weighted' takes weights or metrics, not both")
        if weights is not None:
            w = _normalise_weights(weights, m)
        elif metrics is not None:
            w = weights_from_metrics(metrics, "proportional", higher_is_better)
        else:
            raise ValueError("method 'weighted' needs weights=[...] or validation metrics=[...]")
    else:  # rank
        if metrics is None:
            raise ValueError("method 'rank' needs the members' validation metrics=[...]")
        w = weights_from_metrics(metrics, "rank", higher_is_better)
    if len(w) != m:
        raise ValueError(f"{len(w)} metrics for {m} models")
    return np.tensordot(w, mats, axes=1)


def weights_from_metrics(
    metrics: Sequence[float], method: str = "rank", higher_is_better: bool = True
) -> np.ndarray:
    """Model weights (summing to 1) from the members' validation metrics.

    ``"rank"``: worst model rank 1 ... best rank M (ties share their average rank), ``w = rank / sum(ranks)``;
    e.g. metrics ``[0.7, 0.9, 0.8]`` -> ranks ``[1, 3, 2]`` -> weights ``[1/6, 3/6, 2/6]``.
    ``"proportional"``: ``w = metric / sum(metric)`` (needs non-negative, higher-is-better metrics).
    """
    if method not in _WEIGHT_METHODS:
        raise ValueError(f"unknown weighting {method!r}; choose one of {', '.join(_WEIGHT_METHODS)}")
    x = _as_vector(metrics, "metrics")
    if method == "rank":
        ranks = rankdata(x if higher_is_better else -x, method="average")
        return ranks / ranks.sum()
    if not higher_is_better:
        raise ValueError("proportional weights need a higher-is-better metric; use 'rank' for losses/errors")
    if (x < 0).any() or x.sum() <= 0:
        raise ValueError(
            f"proportional weights need non-negative metrics with a positive sum, got {x.tolist()}"
        )
    return x / x.sum()


def evaluate_members(
    scores_list: Sequence, y_true, metric_fn: Callable[[np.ndarray, np.ndarray], float]
) -> np.ndarray:
    """``metric_fn(y_true, scores_m)`` for every member m, as a float64 array ``[M]``.

    ``metric_fn`` follows the scikit-learn order (truth first, e.g. a mAP or an accuracy of argmax);
    the result is the ``metrics=`` argument of :func:`combine`.
    """
    mats = _stack(scores_list)
    y = _to_numpy(y_true)
    if len(y) != mats.shape[1]:
        raise ValueError(f"y_true has {len(y)} rows, the scores have {mats.shape[1]}")
    return np.array([float(metric_fn(y, s)) for s in mats], dtype=np.float64)


def vote_counts(scores: Sequence, multi_label: bool = False, threshold: float = 0.5) -> np.ndarray:
    """Fraction of the M models voting for each (row, class), ``[N, C]``.

    Single-label: the vote is the model's argmax (each row sums to 1). Multi-label: probability >= threshold.
    """
    mats = _stack(scores)
    return _votes(mats, multi_label, threshold) / mats.shape[0]


def _votes(mats: np.ndarray, multi_label: bool, threshold: float) -> np.ndarray:
    if multi_label:
        return (mats >= threshold).sum(axis=0).astype(np.float64)
    m, n, c = mats.shape
    votes = np.zeros((n, c))
    rows = np.arange(n)
    for p in mats:
        np.add.at(votes, (rows, p.argmax(axis=1)), 1.0)
    return votes


def _vote(mats: np.ndarray, multi_label: bool, threshold: float) -> np.ndarray:
    m, n, c = mats.shape
    votes = _votes(mats, multi_label, threshold)
    if multi_label:
        out = (2 * votes > m).astype(np.float64)
        tie = 2 * votes == m
        out[tie] = (mats.mean(axis=0)[tie] >= threshold).astype(np.float64)
        return out
    top = votes == votes.max(axis=1, keepdims=True)  # classes with the most votes (ties included)
    tiebreak = np.where(top, mats.sum(axis=0), -np.inf)
    out = np.zeros((n, c))
    out[np.arange(n), tiebreak.argmax(axis=1)] = 1.0
    return out


def _normalise_weights(weights: Sequence[float], m: int) -> np.ndarray:
    w = _as_vector(weights, "weights")
    if len(w) != m:
        raise ValueError(f"{len(w)} weights for {m} models")
    if (w < 0).any():
        raise ValueError(f"weights must be non-negative, got {w.tolist()}")
    if w.sum() <= 0:
        raise ValueError(f"weights must have a positive sum, got {w.tolist()}")
    return w / w.sum()


def _as_vector(values, name: str) -> np.ndarray:
    x = np.asarray(_to_numpy(values), dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D list of numbers, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got {x.tolist()}")
    return x


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)):
        return np.asarray([_to_numpy(v) for v in x])
    return np.asarray(x)


def _stack(scores) -> np.ndarray:
    """The members' score matrices as one float64 array [M, N, C], with the checks of the public API."""
    if hasattr(scores, "detach") or isinstance(scores, np.ndarray):
        scores = list(scores)  # a stacked [M, N, C] array or tensor
    if not isinstance(scores, (list, tuple)) or len(scores) == 0:
        raise ValueError("scores must be a non-empty list of [N, C] score matrices, one per model")
    mats = []
    for i, s in enumerate(scores):
        a = np.asarray(_to_numpy(s), dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"model {i}: scores must be [N, C], got shape {a.shape}")
        if mats and a.shape != mats[0].shape:
            raise ValueError(f"model {i}: scores of shape {a.shape}, model 0 has {mats[0].shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"model {i}: scores contain NaN or infinity")
        mats.append(a)
    return np.stack(mats)


# ---------------------------------------------------------------------------------- members of a classify run
def check_members(
    labels_list: Sequence[Sequence[str]], multi: Sequence[bool], names: Sequence[str], least: int = 2
) -> None:
    """Members that can be combined: at least ``least`` of them, with the same labels, all single- or all
    multi-label."""
    if len(labels_list) < least:
        raise ValueError(f"an ensemble needs at least {'two checkpoints' if least == 2 else 'one member'}")
    for name, labels, ml in zip(names[1:], labels_list[1:], multi[1:]):
        if list(labels) != list(labels_list[0]):
            raise ValueError(
                f"{name}: labels {list(labels)} differ from {names[0]}'s {list(labels_list[0])}; "
                "ensemble members must share their labels"
            )
        if ml != multi[0]:
            raise ValueError(f"{name}: {'multi' if ml else 'single'}-label scores, {names[0]} is not")


class EnsembleClassifier(Predictor):
    """Members' scores combined by :func:`combine` behind :class:`~sed.inference.classifier.Classifier`'s API:
    :meth:`score`, :meth:`predict` and :meth:`classify_batch`. Each member reads audio at its own rate (a file
    is loaded by each; a waveform, given at :attr:`sample_rate` -- the first member's --, is resampled per
    member). An ensemble of one is its member exactly (``average``, ``weighted``, ``rank``).

    >>> ens = EnsembleClassifier([Classifier.from_pretrained(p) for p in ckpts], "average")  # doctest: +SKIP
    >>> ens.predict(["a.wav"], top_k=3)                                                       # doctest: +SKIP
    """

    def __init__(
        self,
        members: Sequence[Classifier],
        method: str = "average",
        weights: Sequence[float] | None = None,
        metrics: Sequence[float] | None = None,
        threshold: float = 0.5,
    ):
        self.members = list(members)
        names = [str(c.meta.get("source") or f"member {i}") for i, c in enumerate(self.members)]
        check_members([c.labels for c in self.members], [c.multi_label for c in self.members], names, least=1)
        head = self.members[0]
        self.labels, self.multi_label, self.sample_rate = head.labels, head.multi_label, head.sample_rate
        self.method, self.weights, self.metrics, self.threshold = method, weights, metrics, threshold
        self.combine(
            [np.zeros((1, max(1, len(self.labels))))] * len(self.members)
        )  # a bad method or weights: now

    def combine(self, mats: Sequence, multi_label: bool | None = None) -> np.ndarray:
        """The members' ``[N, C]`` scores as one ``[N, C]`` matrix by this ensemble's method."""
        ml = self.multi_label if multi_label is None else bool(multi_label)
        return combine(
            mats,
            self.method,
            weights=self.weights,
            metrics=self.metrics,
            multi_label=ml,
            threshold=self.threshold,
        )

    def classify_batch(
        self, wave: torch.Tensor, lengths: torch.Tensor | None = None, multi_label: bool | None = None
    ) -> torch.Tensor:
        """Combined scores ``[B, C]`` of waveforms ``[B, T]`` at :attr:`sample_rate` (resampled to each
        member's)."""
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[-1])
        mats = []
        for m in self.members:
            w = resample(wave, self.sample_rate, m.sample_rate)
            n = (
                lengths * m.sample_rate + self.sample_rate - 1
            ) // self.sample_rate  # ceil, as resample's length
            mats.append(m.classify_batch(w, n.clamp(max=w.shape[-1]), multi_label).numpy())
        return torch.from_numpy(self.combine(mats, multi_label))

    def score(
        self, sources: Sequence[Source], multi_label: bool | None = None, **kwargs: Any
    ) -> list[FileResult]:
        """:meth:`Classifier.score`'s results of the combined scores (clip, and each window in window mode);
        an input that fails for any member carries that member's ``error``."""
        per_member = [
            m.score([self._at_rate(s, m.sample_rate) for s in sources], multi_label=multi_label, **kwargs)
            for m in self.members
        ]
        out = []
        for results in zip(*per_member):
            res = FileResult(
                results[0].name, cropped=max((r.cropped for r in results if r.cropped), default=None)
            )
            res.error = next((r.error for r in results if r.error), None)
            if res.error is None and any(r.scores is None for r in results):
                res.error = f"{res.name}: no audio to score"
            if res.error is None and len({len(r.windows) for r in results}) > 1:
                res.error = f"{res.name}: the members cut different windows (different sample rates?)"
            if res.error is None:
                res.scores = self.combine([r.scores[None] for r in results], multi_label)[0]
                if results[0].windows:
                    win = self.combine([np.stack([w[2] for w in r.windows]) for r in results], multi_label)
                    res.windows = [(s, e, sc) for (s, e, _), sc in zip(results[0].windows, win)]
            out.append(res)
        return out

    def _at_rate(self, src: Source, rate: int) -> Source:
        """A waveform source (at :attr:`sample_rate`) resampled to ``rate``; a file as it is."""
        if isinstance(src, tuple):
            return src[0], resample(src[1].float(), self.sample_rate, rate)
        return resample(src.float(), self.sample_rate, rate) if isinstance(src, torch.Tensor) else src
