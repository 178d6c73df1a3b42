"""Learning curves: the per-epoch history of a run's ``metrics.csv``, the notes' over-/underfitting
diagnosis, and the curves as a PNG (matplotlib's Agg canvas: no windows)."""

from __future__ import annotations

import csv
import math
import re
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sed.errors import DatasetError
from sed.fileio import atomic_save

KINDS = ("overfitting", "underfitting", "good fit", "not enough epochs", "unstable")
History = dict[str, list[tuple[int, float]]]


# ----------------------------------------------------------------------------------- metrics.csv
def find_metrics_csv(run_dir) -> Path | None:
    """The newest ``metrics.csv`` in ``run_dir`` or any ``version_N/`` below it (mtime, then N)."""
    found = [p for p in Path(run_dir).rglob("metrics.csv") if p.is_file()]
    return max(
        found, key=lambda p: (p.stat().st_mtime, int(re.sub(r"\D", "", p.parent.name) or -1)), default=None
    )


def _float(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def read_history(run_dir) -> History:
    """Per logged key, the ``(epoch, value)`` pairs of a Lightning CSVLogger ``metrics.csv``.

    ``run_dir`` is a run folder (the newest ``metrics.csv`` is used) or the CSV itself.  Sparse rows
    are merged; empty and NaN cells are ignored.  ``X_step`` keys are dropped and ``X_epoch`` is
    read as ``X``.  A key logged several times in one epoch becomes its epoch mean (``lr-*``: last).
    """
    path = Path(run_dir)
    if path.is_dir():
        path = find_metrics_csv(path)
        if path is None:
            raise DatasetError(run_dir, "no metrics.csv (Lightning CSVLogger) in this run folder")
    per: dict[str, dict[int, list[float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if (epoch := _float(row.get("epoch"))) is None:
                continue
            for k, v in row.items():
                if (
                    k not in (None, "epoch", "step")
                    and not k.endswith("_step")
                    and (x := _float(v)) is not None
                ):
                    name = k[: -len("_epoch")] if k.endswith("_epoch") else k
                    per.setdefault(name, {}).setdefault(int(epoch), []).append(x)
    return {
        k: [(e, vs[-1] if k.startswith("lr-") else float(np.mean(vs))) for e, vs in sorted(d.items())]
        for k, d in per.items()
    }


# -------------------------------------------------------------------------------------- diagnosis
@dataclass
class Diagnosis:
    kind: str  # one of KINDS
    message: str
    epoch: int | None = None  # overfitting: the best (lowest validation loss) epoch; stop there
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average; the edges average the neighbours that exist."""
    if window <= 1:
        return x.copy()
    k = np.ones(window)
    return np.convolve(x, k, mode="same") / np.convolve(np.ones_like(x), k, mode="same")


def _trend(x: np.ndarray, k: int, scale: float) -> float:
    """The change over the last ``k`` epochs along a robust line through them (Theil-Sen: one noisy
    epoch does not tilt it), as a fraction of ``scale``; negative: falling."""
    from scipy.stats import theilslopes

    y = x[-k:]
    return float(theilslopes(y).slope * (len(y) - 1) / scale) if len(y) > 1 else 0.0


def diagnose(
    train_loss,
    val_loss,
    patience: int = 3,
    *,
    epochs=None,
    chance_loss: float | None = None,
    smooth: int = 3,
    min_epochs: int | None = None,
    rise_tol: float = 0.10,
    fall_tol: float = 0.02,
    gap_tol: float = 0.10,
    flat_tol: float = 0.05,
    high_frac: float = 0.70,
    conv_tol: float = 0.02,
) -> Diagnosis:
    """Read per-epoch training/validation loss curves as the project notes do (under/over/good fit).

    Both curves are cut to their common length ``n``; the minimum is searched on a centred moving
    average over ``smooth`` epochs.  "End" values are means over the last ``patience`` epochs, "gap"
    is end validation minus end training loss, ``scale`` is ``chance_loss`` when given (e.g.
    ``ln(num_classes)`` for cross-entropy), else the larger first-epoch loss, and the validation
    noise is estimated robustly from second differences.  Rules, first match wins:

    1. **not enough epochs**: ``n < min_epochs`` (default ``max(5, 2 * patience)``, at least 4).
    2. **underfitting** (judged on the training loss alone): flat, i.e. improved by < ``flat_tol``
       (5 %) of its value over the second half, and high, i.e. end >= ``high_frac`` (70 %) of ``scale``.
    3. **overfitting**: (a) validation rose: its minimum is at epoch ``m`` with >= ``patience`` epochs
       after it (EarlyStopping would have fired), the end is >= ``rise_tol`` (10 %) and > 3 noise std
       above the minimum, training loss fell by >= ``fall_tol`` (2 %) of its value at ``m`` and the
       gap is positive and wider than at ``m``; ``epoch`` is ``m`` (the raw minimum within
       +-``smooth // 2`` of the smoothed one): the last good epoch, the rise starts at ``m + 1``.
       Or (b) validation has stayed within ``max(3 noise std, 1 % of scale)`` of its minimum for
       >= ``patience`` epochs and the gap is > ``gap_tol * scale`` (10 %); ``epoch`` is where that
       plateau begins.
    The trend of a curve is its change over the last ``k = max(3, tail)`` epochs (``tail = max(patience,
    n // 4)``, at most ``n // 2``) along a robust (Theil-Sen) line, over ``scale``: falling below
    ``-conv_tol`` (2 %), rising above ``conv_tol``, else flat.

    4. **unstable**: the training loss is rising at the end (diverging or oscillating optimisation:
       lower the learning rate).
    5. **good fit**: converged, i.e. both curves flat at the end, and the gap is <= ``gap_tol * scale``
       (10 %; a negative gap counts as small).
    6. otherwise **not enough epochs**: a loss is still falling (or validation only just stopped
       improving with a large gap, or is rising while the training loss is flat): train longer and
       watch the curves; the message names which curve does what.
    """
    n = min(len(train_loss), len(val_loss))
    t_raw, v_raw = np.asarray(train_loss[:n], dtype=float), np.asarray(val_loss[:n], dtype=float)
    ok = np.isfinite(t_raw) & np.isfinite(v_raw)  # epochs with a NaN loss are left out
    ep = [e for e, good in zip(epochs[:n] if epochs is not None else range(n), ok) if good]
    t_raw, v_raw, n = t_raw[ok], v_raw[ok], int(ok.sum())
    min_epochs = max(4, max(5, 2 * patience) if min_epochs is None else min_epochs)
    if n < min_epochs:
        return Diagnosis(
            "not enough epochs",
            f"Only {n} epoch(s) with both losses; at least {min_epochs} "
            "are needed to judge the learning curves: train for more epochs.",
            details={"epochs": n, "min_epochs": min_epochs},
        )
    t, v = _smooth(t_raw, smooth), _smooth(v_raw, smooth)
    scale = float(chance_loss) if chance_loss else float(max(abs(t_raw[0]), abs(v_raw[0])))
    scale = max(scale, 1e-12)
    h = max(smooth // 2, 0)
    m = int(np.argmin(v))
    lo = max(0, m - h)
    m = lo + int(np.argmin(v_raw[lo : m + h + 1]))
    tail = max(1, min(max(patience, n // 4), n // 2))
    k = min(n, max(3, tail))
    t_end, v_end = float(t_raw[-patience:].mean()), float(v_raw[-patience:].mean())
    sigma = 1.4826 * float(np.median(np.abs(np.diff(v_raw, 2)))) / math.sqrt(6)  # val noise std
    gap, gap_m = v_end - t_end, float(v[m] - t[m])

    def drop(x):  # mean of the tail epochs before the last ones minus mean of the last ones, / scale
        return float((x[-2 * tail : -tail].mean() - x[-tail:].mean()) / scale)

    d = {
        "epochs": n,
        "scale": scale,
        "best_epoch": ep[m],
        "epochs_since_best": n - 1 - m,
        "val_rise": float((v_end - v[m]) / max(abs(v[m]), 0.01 * scale)),
        "val_noise": sigma,
        "train_fall": float((t[m] - t_end) / max(abs(t[m]), 1e-12)),
        "gap": gap,
        "gap_at_best": gap_m,
        "train_improvement_last_half": float((t[n // 2] - t_end) / max(abs(t[n // 2]), 1e-12)),
        "train_end_over_scale": t_end / scale,
        "train_tail_drop": drop(t_raw),
        "val_tail_drop": drop(v_raw),
        "trend_epochs": k,
        "train_trend": _trend(t_raw, k, scale),
        "val_trend": _trend(v_raw, k, scale),
        "thresholds": {
            "patience": patience,
            "smooth": smooth,
            "rise_tol": rise_tol,
            "fall_tol": fall_tol,
            "gap_tol": gap_tol,
            "flat_tol": flat_tol,
            "high_frac": high_frac,
            "conv_tol": conv_tol,
            "min_epochs": min_epochs,
        },
    }
    if d["train_improvement_last_half"] < flat_tol and d["train_end_over_scale"] >= high_frac:
        ref = "chance-level" if chance_loss else "initial"
        return Diagnosis(
            "underfitting",
            f"Underfitting: training loss is flat and high ({t_end:.3g}, "
            f"{100 * d['train_end_over_scale']:.0f}% of the {ref} loss {scale:.3g}; "
            f"{100 * d['train_improvement_last_half']:.1f}% better over the second half). "
            "The model is not learning the training set: use a bigger model, tune the "
            "learning rate, train longer, reduce regularisation, and check features and labels.",
            details={**d, "rule": "flat-high"},
        )
    plateau = int(np.argmax(v <= v[m] + max(3 * sigma, 0.01 * scale)))  # first epoch near the minimum
    rose = (
        n - 1 - m >= patience
        and d["val_rise"] >= rise_tol
        and v_end - v[m] > 3 * sigma
        and d["train_fall"] >= fall_tol
        and gap > max(gap_m, 0.0)
    )
    if rose or (n - 1 - plateau >= patience and gap > gap_tol * scale):
        if rose:
            what = (
                f"was lowest at epoch {ep[m]} and rose by {100 * d['val_rise']:.0f}% over the next "
                f"{n - 1 - m} epochs while the training loss kept falling"
            )
        else:
            m = plateau
            what = (
                f"stopped improving at epoch {ep[m]} and stays {gap:.3g} above the training loss "
                f"(more than {100 * gap_tol:.0f}% of {scale:.3g})"
            )
        return Diagnosis(
            "overfitting",
            f"Overfitting: validation loss {what}. Stop early at epoch "
            f"{ep[m]} (EarlyStopping on val_loss with patience {patience}, or keep the best "
            "checkpoint) and add regularisation (weight decay, dropout), data augmentation "
            "(SpecAugment, mixup, noise, time shift) or more data, or use a smaller model.",
            ep[m],
            {**d, "rule": "rise" if rose else "gap"},
        )
    if d["train_trend"] > conv_tol:
        return Diagnosis(
            "unstable",
            f"Unstable: the training loss rose over the last {k} epochs "
            f"({t_raw[-k]:.3g} -> {t_raw[-1]:.3g}, {100 * d['train_trend']:.1f}% of {scale:.3g}): "
            "the optimisation is diverging or oscillating, and more epochs will not help. Lower the "
            "learning rate (or add warm-up or gradient clipping) and keep the best checkpoint.",
            details={**d, "rule": "train-rising"},
        )
    converged = abs(d["train_trend"]) <= conv_tol and abs(d["val_trend"]) <= conv_tol
    if converged and gap <= gap_tol * scale:
        return Diagnosis(
            "good fit",
            f"Good fit: training and validation losses have converged "
            f"({t_end:.3g} / {v_end:.3g}) with a small generalisation gap ({gap:.3g}).",
            details={**d, "rule": "converged-small-gap"},
        )
    if converged:  # flat, large gap, but validation still improved within the last `patience` epochs
        msg = (
            f"Both losses have flattened with a large gap ({gap:.3g}) and validation loss was still "
            f"improving {n - 1 - m} epoch(s) ago: train a few more epochs and watch for overfitting."
        )
    elif min(d["train_trend"], d["val_trend"]) < -conv_tol:
        which = "training" if d["train_trend"] < -conv_tol else "validation"
        pct = -100 * min(d["train_trend"], d["val_trend"])
        msg = (
            f"The {which} loss is still falling at the end (by {pct:.1f}% of {scale:.3g} over the "
            f"last {k} epochs): train for more epochs."
        )
    else:  # validation rising, training flat: not (yet) the overfitting pattern
        msg = (
            f"The validation loss rose by {100 * d['val_trend']:.1f}% of {scale:.3g} over the last {k} "
            "epochs while the training loss is flat: train a few more epochs with EarlyStopping on "
            "val_loss and watch for overfitting."
        )
    return Diagnosis("not enough epochs", msg, details={**d, "rule": "still-improving"})


# -------------------------------------------------------------------------------------- figures
def save_figure(fig: Figure, out_png) -> Path:
    out = Path(out_png)
    FigureCanvasAgg(fig)  # Agg canvas: no GUI backend, no pyplot state
    atomic_save(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return out


#: The panels of the learning curves, one unit each, in this order: (name, y label).
PANELS = (
    ("loss", "loss"),
    ("fraction", "fraction (0-1)"),
    ("percent", "percent (%)"),
    ("degrees", "degrees (°)"),
    ("metres", "metres (m)"),
    ("value", "value"),
    ("lr", "learning rate (log)"),
)
#: The unit of a logged metric by its name after the stage prefix (``val_LE`` -> ``LE``): SELD's angular
#: and distance errors, the ICBHI score in percent; error and recall rates are fractions.
METRIC_UNITS = {
    "LE": "degrees",
    "DOAE": "degrees",
    "DistE": "metres",
    "sp": "percent",
    "se": "percent",
    "score": "percent",
    "ER": "fraction",
    "F": "fraction",
    "LR": "fraction",
    "SELD": "fraction",
    "RDE": "fraction",
}


def unit_of(key: str, values) -> str | None:
    """The panel (:data:`PANELS`) a logged key is drawn in, or None when it is not drawn: losses,
    learning rates (``lr-*``), and the ``train_``/``val_``/``test_`` metrics by :data:`METRIC_UNITS`,
    else a fraction when every value lies in [0, 1], else a plain value."""
    if key.startswith("lr-"):
        return "lr"
    if "/" in key or key.split("_")[0] not in ("train", "val", "test"):
        return None
    if key.endswith("loss"):
        return "loss"
    unit = METRIC_UNITS.get(key.split("_", 1)[1] if "_" in key else key)
    return unit or ("fraction" if all(0.0 <= v <= 1.0 for v in values) else "value")


def _draw(ax, history: History, keys: list[str]) -> None:
    for k in keys:
        e, y = zip(*history[k])
        if k.startswith("test_"):
            ax.scatter(e, y, marker="*", s=80, label=k, zorder=3)
        else:
            ax.plot(e, y, marker="o" if len(e) < 30 else None, ms=3, label=k)


def learning_curves_figure(history: History, diagnosis: Diagnosis | None = None) -> Figure:
    """One panel per unit (:data:`PANELS`: loss, 0-1 fractions, percentages, degrees, metres, other
    values, the learning rate on a log axis), so no curve is flattened by another's scale."""
    groups: dict[str, list[str]] = {}
    for k in sorted(history):
        if history[k] and (unit := unit_of(k, [v for _, v in history[k]])) is not None:
            groups.setdefault(unit, []).append(k)
    panels = [(name, label) for name, label in PANELS if name in groups] or [PANELS[0]]
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.5 * cols + 0.5, 4.2 * rows + (0.8 if diagnosis is not None else 0)))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, ylabel) in zip(axes, panels):
        _draw(ax, history, groups.get(name, []))
        if name == "lr" and all(v > 0 for k in groups[name] for _, v in history[k]):
            ax.set_yscale("log")
        elif name in ("fraction", "percent", "degrees", "metres"):
            ax.set_ylim(bottom=0)
        if diagnosis is not None and diagnosis.kind == "overfitting" and diagnosis.epoch is not None:
            ax.axvline(diagnosis.epoch, color="red", ls="--", lw=1, label=f"stop at epoch {diagnosis.epoch}")
        ax.set(xlabel="epoch", ylabel=ylabel, title=name if name != "lr" else "learning rate")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    if diagnosis is not None:
        fig.suptitle(diagnosis.kind.upper(), fontweight="bold")
        fig.text(
            0.5, 0.01, "\n".join(textwrap.wrap(diagnosis.message, 150)), ha="center", va="bottom", fontsize=7
        )
    fig.tight_layout(rect=(0, 0.12 / rows, 1, 0.95) if diagnosis is not None else None)
    return fig


def plot_learning_curves(history: History, out_png, diagnosis: Diagnosis | None = None) -> Path:
    """Write :func:`learning_curves_figure` as a PNG."""
    return save_figure(learning_curves_figure(history, diagnosis), out_png)
