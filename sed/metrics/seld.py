"""DCASE SELD metrics (../shared/specs/seld.md 6): the 2022/2023 segment-level metrics and the 2024
frame-level metrics with distance, leave-one-file-out jackknife intervals, and directory evaluation.

Both metric classes reproduce the official code (``SELD_evaluation_metrics.py``) with its quirks:

- **Frame count** = the last annotated reference frame index, *not* +1 (6.1). It bounds the
  reference and the prediction alike. 2023: frames below ``ceil(n/10)*10`` are kept (so frame ``n``
  itself is dropped when ``n`` is a multiple of 10); 2024: frames ``0..n-1``. A file without
  reference events scores nothing (its predictions are ignored). Pass ``nb_frames`` to override.
- **Tracks are positions**: the reference DOAs of a frame are matched to the predictions by the
  Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on great-circle angles, and the
  2023 per-block errors are collected by the *position* of the reference DOA in its frame.
- **2023 ``FN += np``**: when a class is in both the reference and the prediction of a 1-s block but
  no frame of the block has both, ``FN``, ``DE_FN`` and ``loc_FN`` grow by the *prediction* count.
- LE of a class with ``DE_TP = 0`` is 180 (2023); DOAE/RDE are NaN instead (2024, ``nanmean``).
- ER is global in both averaging modes; macro averages F, LE, LR and SELD over *all* ``nb_classes``
  (a class absent from both sides scores F = 0, LR = 0, LE = 180). ``eps = np.finfo(float).eps``.
- 2023 angles use the official arccos formula, so identical directions may score ~1e-7 deg.
- Class indices ``>= nb_classes`` raise ``ValueError`` (the official code silently ignores them).

Counts are additive over 1-s blocks / frames, so each ``update`` stores one file's counts and the
jackknife recomputes the scores from sums over the other files instead of re-matching.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import t as student_t

from sed.data.corpora.dcase_csv import SeldEvent

EPS = np.finfo(float).eps
STARSS_NB_CLASSES = 13
FRAMES_PER_BLOCK = 10  # 1-s segments of 100-ms label frames (2023)

_ARRAYS_2023 = ("TP", "FP", "FP_spatial", "FN", "Nref", "total_DE", "DE_TP", "DE_FP", "DE_FN")
_ARRAYS_2024 = _ARRAYS_2023 + ("total_DistE", "total_RelDistE")


def _coerce(e, frame: int | None = None) -> tuple[int, int, float, float, float | None]:
    """(frame, class, azimuth, elevation, distance) of a SeldEvent, a Cartesian detection (x, y, z) or a
    tuple."""
    if not hasattr(e, "cls"):
        e = SeldEvent(*e)
    if hasattr(e, "azimuth"):
        az, el = float(e.azimuth), float(e.elevation)
    else:  # Cartesian record, e.g. sed.models.accdoa.SeldDetection
        x, y, z = float(e.x), float(e.y), float(e.z)
        az, el = math.degrees(math.atan2(y, x)), math.degrees(math.atan2(z, math.hypot(x, y)))
    dist = getattr(e, "distance", None)
    return (
        (int(e.frame) if frame is None else int(frame)),
        int(e.cls),
        az,
        el,
        (None if dist is None else float(dist)),
    )


def _by_frame(events) -> dict[int, list[tuple[int, float, float, float | None]]]:
    """``{frame: [(class, az, el, dist), ...]}`` in input order, from a list of events or a frame->events
    dict."""
    items = (
        (_coerce(e, f) for f, evs in events.items() for e in evs)
        if isinstance(events, Mapping)
        else (_coerce(e) for e in events)
    )
    out: dict[int, list] = {}
    for f, c, az, el, d in items:
        out.setdefault(f, []).append((c, az, el, d))
    return out


def great_circle_deg(az1, el1, az2, el2) -> np.ndarray:
    """Great-circle angle in degrees between directions given in degrees (broadcasting), as in 6.1."""
    a1, e1, a2, e2 = (np.deg2rad(np.asarray(v, dtype=float)) for v in (az1, el1, az2, el2))
    d = np.sin(e1) * np.sin(e2) + np.cos(e1) * np.cos(e2) * np.cos(np.abs(a1 - a2))
    return np.arccos(np.clip(d, -1, 1)) * 180 / np.pi


def _unit(az, el) -> np.ndarray:
    a, e = np.deg2rad(np.asarray(az, dtype=float)), np.deg2rad(np.asarray(el, dtype=float))
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1)


def _match(ref: list, pred: list, exact: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hungarian matching of one frame/class: (cost matrix in degrees, ref rows, pred cols).

    ``exact`` uses ``atan2(|u x v|, u . v)`` on unit vectors (accurate near 0 deg) instead of the
    official arccos formula, which gives ~1e-6 deg for identical directions."""
    ra, re_ = np.array([r[1] for r in ref]), np.array([r[2] for r in ref])
    pa, pe = np.array([p[1] for p in pred]), np.array([p[2] for p in pred])
    if exact:
        u, v = _unit(ra, re_)[:, None, :], _unit(pa, pe)[None, :, :]
        cost = np.degrees(np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), (u * v).sum(-1)))
    else:
        cost = great_circle_deg(ra[:, None], re_[:, None], pa[None, :], pe[None, :])
    if cost.size == 1:
        return cost, np.zeros(1, int), np.zeros(1, int)
    rows, cols = linear_sum_assignment(cost)
    return cost, rows, cols


def _miss(cnt: dict, c: int, n: int) -> int:
    cnt["FN"][c] += n
    cnt["DE_FN"][c] += n
    return n


def _extra(cnt: dict, c: int, n: int) -> int:
    cnt["FP"][c] += n
    cnt["DE_FP"][c] += n
    return n


def _add_sdi(cnt: dict, loc_fp: int, loc_fn: int) -> None:
    """Substitutions, deletions, insertions of one 1-s block (2023) or frame (2024)."""
    cnt["S"] += min(loc_fp, loc_fn)
    cnt["D"] += max(0, loc_fn - loc_fp)
    cnt["I"] += max(0, loc_fp - loc_fn)


def jackknife_estimate(global_value: float, partials, significance: float = 0.05) -> dict:
    """Leave-one-out jackknife (6.1): bias ``(n-1)(mean-global)``, estimate ``global-bias``,
    SE ``sqrt((n-1) mean((p-mean)^2))``, CI ``estimate -/+ t_{1-a/2, n-1} SE``."""
    p = np.asarray(partials, dtype=float)
    n = len(p)
    mean = np.mean(p)
    bias = (n - 1) * (mean - global_value)
    std_err = math.sqrt((n - 1) * np.mean((p - mean) ** 2))
    estimate = global_value - bias
    tv = student_t.ppf(1 - significance / 2, n - 1)
    return {
        "estimate": float(estimate),
        "bias": float(bias),
        "std_err": float(std_err),
        "ci": (float(estimate - tv * std_err), float(estimate + tv * std_err)),
    }


class _SeldMetricsBase:
    _arrays: tuple[str, ...] = ()
    _nan_keys: tuple[str, ...] = ()

    def __init__(self, nb_classes: int, doa_threshold: float = 20, average: str = "macro"):
        if average not in ("macro", "micro"):
            raise ValueError(f"average must be 'macro' or 'micro', got {average!r}")
        self.nb_classes, self.doa_threshold, self.average = int(nb_classes), float(doa_threshold), average
        self._files: list[dict] = []

    def reset(self) -> None:
        self._files = []

    def _new_counts(self) -> dict:
        c = {k: np.zeros(self.nb_classes) for k in self._arrays}
        c.update(S=0.0, D=0.0, I=0.0)
        return c

    def update(self, pred_events, ref_events, nb_frames: int | None = None) -> None:
        """Add one file: events as a list of SeldEvent-like records or a ``{frame: [events]}`` dict.

        ``nb_frames`` defaults to the official quirk: the last annotated reference frame index."""
        ref, pred = _by_frame(ref_events), _by_frame(pred_events)
        bad = [
            c for fr in (ref, pred) for evs in fr.values() for c, *_ in evs if not 0 <= c < self.nb_classes
        ]
        if bad:
            raise ValueError(f"class index {bad[0]} outside 0..{self.nb_classes - 1}")
        if nb_frames is None:
            nb_frames = max(ref) if ref else 0
        counts = self._new_counts()
        self._accumulate(counts, pred, ref, int(nb_frames))
        self._files.append(counts)

    def _sum(self, files: list[dict]) -> dict:
        out = self._new_counts()
        for f in files:
            for k in out:
                out[k] = out[k] + f[k]
        return out

    def _scores(self, t: dict) -> tuple[dict, dict]:
        """(overall, class-wise) scores of summed counts. ER is global; macro averages the per-class
        values over all classes (``nanmean`` for the 2024 errors), micro applies them to class sums."""
        er = (t["S"] + t["D"] + t["I"]) / (t["Nref"].sum() + EPS)
        class_wise = {"ER": np.full(self.nb_classes, er), **self._per_class(t, er)}
        if self.average == "macro":
            overall = {
                k: (_nanmean(v) if k in self._nan_keys else float(np.mean(v)))
                for k, v in class_wise.items()
                if k != "ER"
            }
        else:
            overall = {
                k: float(v) for k, v in self._per_class({k: t[k].sum() for k in self._arrays}, er).items()
            }
        return {"ER": float(er), **overall}, class_wise

    @property
    def class_wise(self) -> dict[str, np.ndarray]:
        """Per-class scores (``[nb_classes]`` arrays; ER repeated) from everything accumulated so far."""
        return self._scores(self._sum(self._files))[1]

    def compute(self, jackknife: bool = False, significance: float = 0.05) -> dict:
        """Scores over all files (computed once from the summed counts). With ``jackknife`` the dict
        also holds ``"jackknife": {metric: {estimate, bias, std_err, ci}}`` (leave-one-file-out)."""
        overall, _ = self._scores(self._sum(self._files))
        result = {k: float(v) for k, v in overall.items()}
        if jackknife:
            n = len(self._files)
            if n < 2:
                raise ValueError("the jackknife needs at least 2 files")
            partials = [self._scores(self._sum(self._files[:i] + self._files[i + 1 :]))[0] for i in range(n)]
            result["jackknife"] = {
                k: jackknife_estimate(result[k], [p[k] for p in partials], significance) for k in overall
            }
        return result


class SELDMetrics2023(_SeldMetricsBase):
    """DCASE2022/2023 location-aware detection (ER_20, F_20) and class-aware localization (LE_CD, LR_CD)
    in 1-s segments (6.1). ``compute()`` -> ``{ER, F, LE, LR, SELD}``; F and LR fractions, LE degrees."""

    _arrays = _ARRAYS_2023

    def _accumulate(self, cnt: dict, pred: dict, ref: dict, nb_frames: int) -> None:
        limit = math.ceil(nb_frames / FRAMES_PER_BLOCK) * FRAMES_PER_BLOCK
        segs = []
        for frames in (ref, pred):  # block -> class -> frame offset -> [DOAs in file order]
            seg: dict[int, dict[int, dict[int, list]]] = {}
            for f in sorted(frames):
                if f < limit:
                    for ev in frames[f]:
                        b, off = divmod(f, FRAMES_PER_BLOCK)
                        seg.setdefault(b, {}).setdefault(ev[0], {}).setdefault(off, []).append(ev)
            segs.append(seg)
        ref_seg, pred_seg = segs
        T = self.doa_threshold
        for b in sorted(ref_seg.keys() | pred_seg.keys()):
            rb, pb = ref_seg.get(b, {}), pred_seg.get(b, {})
            loc_fp = loc_fn = 0
            for c in sorted(rb.keys() | pb.keys()):
                g, p = rb.get(c), pb.get(c)
                ng = max(map(len, g.values())) if g else 0
                npr = max(map(len, p.values())) if p else 0
                cnt["Nref"][c] += ng
                if g and p:
                    per_ref: dict[int, list[float]] = {}  # reference position in frame -> matched angles
                    for off in sorted(g):
                        if off in p:
                            cost, rows, cols = _match(g[off], p[off])
                            for r, k in zip(rows, cols):
                                per_ref.setdefault(int(r), []).append(float(cost[r, k]))
                    if not per_ref:  # quirk: counts the *prediction* tracks as misses
                        loc_fn += _miss(cnt, c, npr)
                        continue
                    for dists in per_ref.values():
                        avg = sum(dists) / len(dists)
                        cnt["total_DE"][c] += avg
                        cnt["DE_TP"][c] += 1
                        if avg <= T:
                            cnt["TP"][c] += 1
                        else:
                            cnt["FP_spatial"][c] += 1
                            loc_fp += 1
                    loc_fp += _extra(cnt, c, max(0, npr - ng))
                    loc_fn += _miss(cnt, c, max(0, ng - npr))
                elif g:
                    loc_fn += _miss(cnt, c, ng)
                else:
                    loc_fp += _extra(cnt, c, npr)
            _add_sdi(cnt, loc_fp, loc_fn)

    def _per_class(self, s: dict, er: float) -> dict:
        """F, LE (180 without DE_TP), LR and SELD from counts (per-class arrays or micro sums)."""
        tp = np.asarray(s["DE_TP"], dtype=float)
        f = s["TP"] / (EPS + s["TP"] + s["FP_spatial"] + 0.5 * (s["FP"] + s["FN"]))
        le = np.where(tp == 0, 180.0, s["total_DE"] / (tp + EPS))
        lr = tp / (EPS + tp + s["DE_FN"])
        return {"F": f, "LE": le, "LR": lr, "SELD": (er + (1 - f) + le / 180 + (1 - lr)) / 4}


class SELDMetrics2024(_SeldMetricsBase):
    """DCASE2024 frame-level metrics with distance (6.2). A matched pair is a true positive when its DOA
    error is <= ``doa_threshold``, ``|d_ref - d_pred| <= dist_threshold`` and the relative distance error
    ``<= reldist_threshold``. ``compute()`` -> ``{F, DOAE, DistE, RDE, ER, LR, SELD}`` with
    SELD = mean over classes of ``nanmean(1-F_c, DOAE_c/180, RDE_c)`` (macro).

    Reference distances are converted cm -> m when ``ref_cm_to_m`` (the official ``cm2m=True``);
    predictions are in metres. With ``eval_dist=False`` distances are ignored and SELD is the 2023 form.
    Angles are computed exactly (``atan2``); the official code adds 1e-10 under the vector norm,
    which shifts a perfect match to ~8e-4 degrees, and is otherwise equal."""

    _arrays = _ARRAYS_2024
    _nan_keys = ("DOAE", "DistE", "RDE")

    def __init__(
        self,
        nb_classes: int,
        doa_threshold: float = 20,
        dist_threshold: float = float("inf"),
        reldist_threshold: float = 1.0,
        average: str = "macro",
        ref_cm_to_m: bool = True,
        eval_dist: bool = True,
    ):
        super().__init__(nb_classes, doa_threshold, average)
        self.dist_threshold, self.reldist_threshold = float(dist_threshold), float(reldist_threshold)
        self.ref_cm_to_m, self.eval_dist = ref_cm_to_m, eval_dist

    def _accumulate(self, cnt: dict, pred: dict, ref: dict, nb_frames: int) -> None:
        scale = 0.01 if self.ref_cm_to_m else 1.0
        for f in sorted(f for f in ref.keys() | pred.keys() if f < nb_frames):
            rf, pf = {}, {}
            for src, dst in ((ref.get(f, ()), rf), (pred.get(f, ()), pf)):
                for ev in src:
                    dst.setdefault(ev[0], []).append(ev)
            loc_fp = loc_fn = 0
            for c in sorted(rf.keys() | pf.keys()):
                g, p = rf.get(c, []), pf.get(c, [])
                R, P = len(g), len(p)
                cnt["Nref"][c] += R
                if R and P:
                    cost, rows, cols = _match(g, p, exact=True)
                    doa = cost[rows, cols]
                    bad = doa > self.doa_threshold
                    if self.eval_dist:
                        if any(e[3] is None for e in g) or any(e[3] is None for e in p):
                            raise ValueError(f"frame {f}: distance missing in reference or prediction")
                        dr = np.array([g[r][3] for r in rows]) * scale
                        de = np.abs(dr - np.array([p[k][3] for k in cols]))
                        rel = de / (dr + EPS)
                        bad |= (de > self.dist_threshold) | (rel > self.reldist_threshold)
                        cnt["total_DistE"][c] += de.sum()
                        cnt["total_RelDistE"][c] += rel.sum()
                    K, L = len(rows), int(bad.sum())
                    cnt["total_DE"][c] += doa.sum()
                    cnt["TP"][c] += K - L
                    cnt["DE_TP"][c] += K
                    cnt["FP_spatial"][c] += L
                    loc_fp += _extra(cnt, c, max(0, P - R)) + L
                    loc_fn += _miss(cnt, c, max(0, R - P))
                elif R:
                    loc_fn += _miss(cnt, c, R)
                else:
                    loc_fp += _extra(cnt, c, P)
            _add_sdi(cnt, loc_fp, loc_fn)

    def _per_class(self, s: dict, er: float) -> dict:
        """F, DOAE, DistE, RDE, LR, SELD from counts (arrays per class, or scalar sums for micro)."""
        tp = np.asarray(s["DE_TP"], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            f = s["TP"] / (EPS + s["TP"] + s["FP_spatial"] + 0.5 * (s["FP"] + s["FN"]))
            doae, diste, rde = (
                np.where(tp == 0, np.nan, s[k] / (tp + EPS))
                for k in ("total_DE", "total_DistE", "total_RelDistE")
            )
            lr = tp / (EPS + tp + s["DE_FN"])
        if self.eval_dist:
            parts = [1 - f, doae / 180, rde]
        else:
            parts = [np.broadcast_to(er, np.shape(f)), 1 - f, doae / 180, 1 - lr]
            diste = rde = np.full(np.shape(f), np.nan)
        seld = _nanmean_rows(np.array(parts, dtype=float))
        return {"F": f, "DOAE": doae, "DistE": diste, "RDE": rde, "LR": lr, "SELD": seld}


def _nanmean(v) -> float:
    v = np.asarray(v, dtype=float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    """``np.nanmean(a, axis=0)``, NaN (without a warning) where a column is all NaN."""
    n = (~np.isnan(a)).sum(axis=0)
    return np.where(n > 0, np.nansum(a, axis=0) / np.maximum(n, 1), np.nan)
