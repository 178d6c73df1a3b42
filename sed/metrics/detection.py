"""Sound event detection metrics (DCASE Task 4) through ``sed_scores_eval``, the maintained standard.

Inputs, all keyed by file id (the audio file name without its extension):

- ground truth ``{id: [(onset, offset, label), ...]}`` (seconds; a file without events maps to ``[]``),
- durations ``{id: seconds}``,
- scores ``{id: DataFrame}`` in ``sed_scores_eval``'s layout (:func:`frame_scores` makes one from a
  model's frame probabilities), or, for the F1s alone, thresholded events (:func:`event_metrics`).

Parameters (DCASE 2024 Task 4):

- PSDS1: dtc = gtc = 0.7, alpha_st = 1, alpha_ct = 0, max_efpr = 100 per hour;
- PSDS2: dtc = gtc = 0.1, cttc = 0.3, alpha_ct = 0.5, alpha_st = 1, max_efpr = 100 per hour;
- intersection F1: dtc = gtc = 0.5; collar F1: onset collar 0.2 s, offset collar max(0.2 s, 20 % of the
  event); segment F1: 1 s segments. Each F1 is the macro average over classes.

PSDS is exact: ``sed_scores_eval`` evaluates every operating point of the scores, where ``psds_eval``
evaluates a grid of thresholds (50 in the DCASE baseline) and comes out lower. A frame is active when its
score is strictly above the threshold.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np

__all__ = [
    "COLLAR_F1",
    "INTERSECTION_F1",
    "METRICS",
    "PSDS_SCENARIOS",
    "SEGMENT_LENGTH",
    "align",
    "detection_metrics",
    "detection_report",
    "event_metrics",
    "events_to_scores",
    "frame_scores",
    "psds",
]

PSDS_SCENARIOS = {
    1: {"dtc_threshold": 0.7, "gtc_threshold": 0.7, "cttc_threshold": None, "alpha_ct": 0.0},
    2: {"dtc_threshold": 0.1, "gtc_threshold": 0.1, "cttc_threshold": 0.3, "alpha_ct": 0.5},
}
PSDS_COMMON = {"alpha_st": 1.0, "max_efpr": 100.0, "unit_of_time": "hour"}
INTERSECTION_F1 = {"dtc_threshold": 0.5, "gtc_threshold": 0.5}
COLLAR_F1 = {"onset_collar": 0.2, "offset_collar": 0.2, "offset_collar_rate": 0.2}
SEGMENT_LENGTH = 1.0
METRICS = ("psds1", "psds2", "intersection_f1", "collar_f1", "segment_f1")


def _sse():
    """``sed_scores_eval``, imported on first use (it takes seconds: sed_eval, dcase_util, librosa).

    dcase_util imports ``pkg_resources``, which setuptools 81 deprecates and 82 removed."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pkg_resources.*")
            import sed_scores_eval
            from sed_scores_eval import collar_based, intersection_based, segment_based  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"sed_scores_eval cannot be imported ({e}); install it with setuptools<82 "
            "(its sed_eval/dcase_util need pkg_resources): pip install 'setuptools<82' sed_scores_eval"
        ) from None
    return sed_scores_eval


class _Writable:
    """Makes a score DataFrame whose ``to_numpy()`` is writable: ``sed_scores_eval`` 0.0.4 hands those
    arrays to Cython memoryviews, which refuse the read-only views of pandas 3 (copy-on-write)."""

    cls = None

    @classmethod
    def frame(cls, df):
        if cls.cls is None:
            import pandas as pd

            class ScoreFrame(pd.DataFrame):
                @property
                def _constructor(self):
                    return ScoreFrame

                def to_numpy(self, *args, **kwargs):
                    return np.array(super().to_numpy(*args, **kwargs))

            cls.cls = ScoreFrame
        return df if isinstance(df, cls.cls) else cls.cls(df)


def frame_scores(probs, hop: float, labels, offset: float = 0.0):
    """A score DataFrame of frame probabilities ``[F, C]``: frame i spans ``offset + [i, i + 1) * hop``."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(labels)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] != len(labels):
        raise ValueError(f"probabilities of shape {tuple(probs.shape)} do not fit {len(labels)} labels")
    if not (hop > 0 and math.isfinite(hop)) or not math.isfinite(offset):
        raise ValueError(f"frame hop {hop} (offset {offset}) is not a positive time")
    if not np.isfinite(probs).all():
        raise ValueError("probabilities are not finite")
    timestamps = offset + hop * np.arange(probs.shape[0] + 1)
    return _sse().base_modules.scores.create_score_dataframe(probs, timestamps, labels)


def events_to_scores(events, duration: float, labels) -> object:
    """Binary scores of thresholded events (1 inside an event of the class, else 0) over
    ``[0, max(duration, last offset)]``: a threshold in (0, 1) gives the events back (overlapping
    events of one class merged)."""
    labels = list(labels)
    end = max([duration, *(off for _, off, _ in events)]) or 1.0
    times = np.unique(np.array([0.0, end, *(t for on, off, _ in events for t in (on, off))]))
    mids = (times[:-1] + times[1:]) / 2
    probs = np.zeros((len(mids), len(labels)))
    for onset, offset, label in events:
        probs[(mids > onset) & (mids < offset), labels.index(label)] = 1.0
    return _sse().base_modules.scores.create_score_dataframe(probs, times, labels)


def _check_events(events: Mapping, labels: list[str], what: str) -> dict:
    out = {}
    for key, items in events.items():
        rows = []
        for onset, offset, label in items:
            if label not in labels:
                raise ValueError(f"{what} of {key}: label {label!s} is not one of the score classes")
            if not (0 <= onset < offset):
                raise ValueError(f"{what} of {key}: event [{onset}, {offset}) is not a time span >= 0")
            rows.append((float(onset), float(offset), str(label)))
        out[key] = rows
    return out


def align(scores: Mapping, ground_truth: Mapping, durations: Mapping | None):
    """The evaluated files and classes: ``(scores, ground truth, durations, ids scored as silent, classes
    left out)``. ``sed_scores_eval`` refuses a class without ground-truth events: such classes are left out
    of the scores (and listed), the others evaluated.

    With ``durations`` its files are evaluated: every scored or annotated file must be in it, and a file
    without scores is scored as silent (its id listed). Without, the scored files are evaluated, each as
    long as its scores, and an annotated file without scores is an error."""
    if not scores:
        raise ValueError("no scores")
    labels = [str(c) for c in next(iter(scores.values())).columns[2:]]
    for key, df in scores.items():
        if [str(c) for c in df.columns[2:]] != labels:
            raise ValueError(f"scores of {key} name other classes than the rest")
    if durations is None:
        durations = {key: float(df["offset"].iloc[-1]) for key, df in scores.items()}
        unscored = sorted(set(ground_truth) - set(scores))
        if unscored:
            raise ValueError(
                f"no scores for annotated file {unscored[0]} (give durations to score it silent)"
            )
    else:
        durations = {key: float(v) for key, v in durations.items()}
        for what, keys in (("scores", scores), ("ground truth", ground_truth)):
            extra = sorted(set(keys) - set(durations))
            if extra:
                raise ValueError(f"{what} for {extra[0]}, which has no duration")
    missing = sorted(set(durations) - set(scores))
    scores = dict(scores)
    for key in missing:
        scores[key] = events_to_scores([], durations[key], labels)
    scores = {key: _Writable.frame(df) for key, df in scores.items()}
    gt = _check_events(ground_truth, labels, "ground truth")
    gt = {key: gt.get(key, []) for key in durations}
    annotated = {e[2] for items in gt.values() for e in items}
    if not annotated:
        raise ValueError("no ground-truth events in the evaluated files: nothing to evaluate")
    left_out = [c for c in labels if c not in annotated]
    if left_out:
        keep = ["onset", "offset", *(c for c in labels if c in annotated)]
        scores = {key: df[keep] for key, df in scores.items()}
    return scores, gt, durations, missing, left_out


def _thresholds(thresholds, labels: list[str]):
    if isinstance(thresholds, Mapping):
        lacking = [c for c in labels if c not in thresholds]
        if lacking:
            raise ValueError(f"no threshold for class {lacking[0]}")
        return {c: float(thresholds[c]) for c in labels}
    return float(thresholds)


def _f1s(scores, gt, durations, thresholds) -> dict[str, dict]:
    sse = _sse()
    labels = [str(c) for c in next(iter(scores.values())).columns[2:]]
    thr = _thresholds(thresholds, labels)
    out = {
        "intersection_f1": sse.intersection_based.fscore(scores, gt, thr, **INTERSECTION_F1)[0],
        "collar_f1": sse.collar_based.fscore(scores, gt, thr, **COLLAR_F1)[0],
        "segment_f1": sse.segment_based.fscore(scores, gt, durations, thr, segment_length=SEGMENT_LENGTH)[0],
    }
    return {name: {key: float(v) for key, v in f.items()} for name, f in out.items()}


def _psds(scores, gt, durations, scenario: int) -> tuple[float, dict[str, float]]:
    if scenario not in PSDS_SCENARIOS:
        raise ValueError(f"PSDS scenario {scenario} is not 1 or 2")
    params = dict(PSDS_SCENARIOS[scenario])
    if len(next(iter(scores.values())).columns) == 3:  # one class: no cross-triggers (sed_scores_eval fails)
        params.update(cttc_threshold=None, alpha_ct=0.0)
    value, per_class, *_ = _sse().intersection_based.psds(
        scores=scores, ground_truth=gt, audio_durations=durations, **params, **PSDS_COMMON
    )
    return float(value), {c: float(v) for c, v in per_class.items()}


def psds(scores: Mapping, ground_truth: Mapping, durations: Mapping | None, scenario: int = 1) -> float:
    """PSDS1 or PSDS2 (DCASE parameters in the module docstring), exact over every operating point."""
    scores, gt, durations, *_ = align(scores, ground_truth, durations)
    return _psds(scores, gt, durations, scenario)[0]


def detection_report(
    scores: Mapping, ground_truth: Mapping, durations: Mapping | None, thresholds=0.5, with_psds: bool = True
) -> dict:
    """``{"macro": {metric: value}, "classes": {label: {metric: value}}, "silent": [ids], "unannotated":
    [labels]}``: PSDS1/2 (``with_psds``) and the F1s at ``thresholds`` (one number, or one per class);
    ``silent`` lists the files of ``durations`` that had no scores and were scored as silent,
    ``unannotated`` the classes without ground-truth events, left out of every metric."""
    scores, gt, durations, missing, left_out = align(scores, ground_truth, durations)
    labels = [str(c) for c in next(iter(scores.values())).columns[2:]]
    macro: dict[str, float] = {}
    classes: dict[str, dict[str, float]] = {c: {} for c in labels}
    if with_psds:
        for scenario in (1, 2):
            value, per_class = _psds(scores, gt, durations, scenario)
            macro[f"psds{scenario}"] = value
            for c in labels:
                classes[c][f"psds{scenario}"] = per_class[c]
    for name, f in _f1s(scores, gt, durations, thresholds).items():
        macro[name] = f["macro_average"]
        for c in labels:
            classes[c][name] = f[c]
    return {"macro": macro, "classes": classes, "silent": missing, "unannotated": left_out}


def detection_metrics(
    scores: Mapping, ground_truth: Mapping, durations: Mapping | None, thresholds=0.5
) -> dict:
    """psds1, psds2, intersection_f1, collar_f1, segment_f1 (macro F1s at ``thresholds``: a number or
    ``{label: threshold}``)."""
    return detection_report(scores, ground_truth, durations, thresholds)["macro"]


def event_metrics(
    detections: Mapping,
    ground_truth: Mapping,
    durations: Mapping | None = None,
    labels=None,
    per_class: bool = False,
) -> dict:
    """intersection_f1, collar_f1 and segment_f1 of thresholded events ``{id: [(onset, offset, label)]}``
    (no scores: no PSDS); ``per_class`` adds the classes and the ``unannotated`` ones left out.
    ``labels``: the classes (default: those of both sides, sorted). Without ``durations`` the files of
    both sides are evaluated, each as long as its last event (as sed_eval does); F1 does not depend on
    the silent rest. Overlapping detections of one class count as one."""
    if labels is None:
        labels = sorted(
            {e[2] for side in (detections, ground_truth) for items in side.values() for e in items}
        )
    labels = [str(c) for c in labels]
    if not labels:
        raise ValueError("no events on either side and no labels: nothing to evaluate")
    detections = _check_events(detections, labels, "detections")
    if durations is None:
        keys = set(detections) | set(ground_truth)
        durations = {
            k: max([0.0, *(e[1] for side in (detections, ground_truth) for e in side.get(k, []))])
            for k in keys
        }
        durations = {k: v or 1.0 for k, v in durations.items()}
    extra = sorted(set(detections) - set(durations))
    if extra:
        raise ValueError(f"detections for {extra[0]}, which has no duration")
    scores = {k: events_to_scores(detections.get(k, []), durations[k], labels) for k in durations}
    scores, gt, durations, _, left_out = align(scores, ground_truth, durations)
    f1s = _f1s(scores, gt, durations, 0.5)
    out = {name: f["macro_average"] for name, f in f1s.items()}
    if per_class:
        kept = [c for c in labels if c not in left_out]
        out = {
            "macro": out,
            "classes": {c: {name: f[c] for name, f in f1s.items()} for c in kept},
            "unannotated": left_out,
        }
    return out
