"""SELD inference on whole files of any length (what ``sedkit seld-infer`` and ``sedkit plot-doa`` run).

Each file is read block-wise (:func:`sed.audio.io.iter_blocks`, 24 kHz, 4 channels), so memory does not
grow with its length, and cut into windows of ``window`` seconds every ``hop`` seconds (both multiples
of the 100-ms label frame, ``hop <= window``). Window outputs are stitched into one sequence of
``samples // 2400`` label frames; where windows overlap (``hop < window``) the frames are averaged.
The last window is aligned to the end of the file (full context) when the regular ones leave frames
uncovered; a file shorter than one window is one window. The sequence is post-processed
(:func:`~sed.models.accdoa.multi_accdoa_to_detections`) and written as a DCASE CSV named like the
audio file (atomically; :func:`sed.fileio.derived_name` shortens a name the file system would
refuse). A bad file is reported and the others go on.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from sed.audio.io import info, iter_blocks
from sed.data.corpora.dcase_csv import read_dcase_csv, write_dcase_csv
from sed.errors import AudioError, SedError
from sed.fileio import derived_name
from sed.inference.device import resolve_device
from sed.metrics.curves import save_figure
from sed.models.accdoa import multi_accdoa_to_detections
from sed.models.loading import load_model

__all__ = ["infer_file", "load_seld_model", "plot_doa", "seld_infer", "write_prediction_csv"]


def load_seld_model(checkpoint: str | os.PathLike, device: str = "auto"):
    """(model in eval mode on ``device``, description) of a SELD checkpoint (``.ckpt`` of SELDTask,
    ``.pt``)."""
    model, desc = load_model(checkpoint, kind="seld")
    return model.to(resolve_device(device)).eval(), desc


def _frames_of(seconds: float, label_samples: int, sample_rate: int, what: str) -> int:
    n = seconds * sample_rate / label_samples
    if seconds <= 0 or not math.isclose(n, round(n), abs_tol=1e-6):
        raise ValueError(
            f"{what} must be a positive multiple of {label_samples / sample_rate:g} s, got {seconds}"
        )
    return round(n)


@torch.inference_mode()
def infer_file(
    model, path: str | os.PathLike, window: float = 5.0, hop: float = 5.0, batch_size: int = 8
) -> np.ndarray:
    """Stitched multi-ACCDOA output ``[samples // 2400, out_dim]`` (float32) of one file (module
    docstring)."""
    sr, lab = model.sample_rate, model.label_frame_samples
    wf, hf = _frames_of(window, lab, sr, "window"), _frames_of(hop, lab, sr, "hop")
    if hf > wf:
        raise ValueError(f"hop ({hop} s) must not exceed window ({window} s)")
    device = next(model.parameters()).device
    meta = info(path)
    est = math.ceil(meta.frames * sr / meta.sample_rate) // lab + 2
    acc = np.zeros((est, model.output_dim), dtype=np.float64)
    cnt = np.zeros(est, dtype=np.int64)
    pending: list[tuple[int, torch.Tensor]] = []

    def run(flush: bool) -> None:
        while pending and (flush or len(pending) >= batch_size):
            chunk, rest = pending[:batch_size], pending[batch_size:]
            pending[:] = rest
            lengths = {w.shape[-1] for _, w in chunk}
            groups = [chunk] if len(lengths) == 1 else [[c] for c in chunk]
            for g in groups:
                out = model(torch.stack([w for _, w in g]).to(device)).float().cpu().numpy()
                for (f0, _), o in zip(g, out):
                    n = min(o.shape[0], acc.shape[0] - f0)
                    acc[f0 : f0 + n] += o[:n]
                    cnt[f0 : f0 + n] += 1

    buf, buf_start, total, next_start, covered = None, 0, 0, 0, 0  # all in label frames except buf/total
    for block in iter_blocks(path, lab * hf, sample_rate=sr, num_channels=4):
        buf = block if buf is None else torch.cat([buf, block], dim=1)
        total += block.shape[1]
        while (next_start - buf_start + wf) * lab <= buf.shape[1]:
            a = (next_start - buf_start) * lab
            pending.append((next_start, buf[:, a : a + wf * lab].clone()))
            covered = next_start + wf
            next_start += hf
            run(False)
        drop = (next_start - buf_start) * lab  # keep from the next window's start
        keep_from = min(drop, max(0, buf.shape[1] - wf * lab))  # and always the last window's samples
        keep_from -= keep_from % lab
        if keep_from > 0:
            buf, buf_start = buf[:, keep_from:], buf_start + keep_from // lab
    frames = total // lab
    if frames < 1:
        raise AudioError(
            path, f"too short: {total} samples at {sr} Hz is less than one {lab}-sample label frame"
        )
    if covered < frames:  # the end: one window aligned to the last whole label frame
        start = max(0, frames - wf)
        a, b = (start - buf_start) * lab, frames * lab - buf_start * lab
        if a < 0:
            raise RuntimeError("internal: end window left the buffer")  # kept by the buffer rule above
        pending.append((start, buf[:, a:b].clone()))
    run(True)
    cnt = cnt[:frames]
    if (cnt == 0).any():
        raise RuntimeError(f"internal: {int((cnt == 0).sum())} label frames not covered")
    return (acc[:frames] / cnt[:, None]).astype(np.float32)


def seld_infer(
    audio_paths: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    window: float = 5.0,
    hop: float = 5.0,
    batch_size: int = 8,
    device: str = "auto",
    year: int = 2023,
    threshold: float = 0.5,
    unify_threshold: float = 15.0,
    progress: bool = False,
) -> list[tuple[str, str | None]]:
    """Write ``<out_dir>/<stem>.csv`` (DCASE format, ``year`` 2023 or 2024) for every file; returns
    ``(path, None)`` per written file and ``(path, one-line error)`` per bad one. Checkpoint and argument
    problems raise (CheckpointError / ValueError) before any file is read."""
    if year not in (2023, 2024):
        raise ValueError(f"year must be 2023 or 2024, got {year}")
    model, _ = load_seld_model(checkpoint, device)
    sr, lab = model.sample_rate, model.label_frame_samples
    if _frames_of(hop, lab, sr, "hop") > _frames_of(window, lab, sr, "window"):
        raise ValueError(f"hop ({hop} s) must not exceed window ({window} s)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, str | None]] = []
    seen: dict[str, str] = {}
    items = list(audio_paths)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="seld-infer", unit="file", file=sys.stderr, disable=None, leave=False)
    for p in items:
        p = str(p)
        name = derived_name(Path(p).stem, ".csv")
        if name in seen:
            results.append(
                (p, str(SedError(p, f"same file name as {seen[name]}; its CSV would be overwritten")))
            )
            continue
        try:
            output = infer_file(model, p, window, hop, batch_size)
            dets = multi_accdoa_to_detections(
                output, model.num_classes, threshold=threshold, unify_threshold=unify_threshold
            )
            write_prediction_csv(out / name, dets, year=year)
            seen[name] = p
            results.append((p, None))
        except SedError as e:
            results.append((p, str(e)))
        except (RuntimeError, ValueError, OSError) as e:
            results.append(
                (p, str(SedError(p, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")))
            )
    return results


def _class_names(classes: Sequence[int], labels: Sequence[str] | None) -> dict[int, str]:
    """Names of the class indices: ``labels`` (a checkpoint's), else the STARSS names when every index
    is one of STARSS's 13 classes, else ``class N``."""
    from sed.data.corpora.starss import CLASS_NAMES

    names = (
        list(labels) if labels else (list(CLASS_NAMES) if all(c < len(CLASS_NAMES) for c in classes) else [])
    )
    return {c: names[c] if c < len(names) else f"class {c}" for c in classes}


def plot_doa(
    csv: str | os.PathLike,
    out_png: str | os.PathLike,
    ref_csv: str | os.PathLike | None = None,
    labels: Sequence[str] | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> Path:
    """Azimuth and elevation against time (0.1 s frames) per class: the predictions as coloured dots
    (one colour per class, named by ``labels``, else the ``checkpoint``'s labels, else the STARSS
    names), the reference of ``ref_csv`` as wide grey marks underneath. The title names the files and
    the model of ``checkpoint`` (a SELD checkpoint; CheckpointError otherwise). Written atomically."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    model = "model not named (--checkpoint names it)"
    if checkpoint is not None:
        _, desc = load_seld_model(checkpoint, "cpu")
        labels = labels or desc.get("labels")
        model = f"model {desc.get('model_name', '?')} ({Path(checkpoint).name})"
    pred = read_dcase_csv(csv)
    ref = read_dcase_csv(ref_csv) if ref_csv is not None else []
    classes = sorted({e.cls for e in (*pred, *ref)})
    names = _class_names(classes, labels)
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    fig = Figure(figsize=(12, 6.5))
    axes = fig.subplots(2, 1, sharex=True)
    if ref:
        t = [e.frame * 0.1 for e in ref]
        for ax, y in zip(axes, ([e.azimuth for e in ref], [e.elevation for e in ref])):
            ax.scatter(
                t, y, color="0.6", s=60, marker="s", alpha=0.5, linewidths=0, label="reference", zorder=1
            )
    for k, c in enumerate(cl for cl in classes if any(e.cls == cl for e in pred)):
        ev = [e for e in pred if e.cls == c]
        t = [e.frame * 0.1 for e in ev]
        for ax, y in zip(axes, ([e.azimuth for e in ev], [e.elevation for e in ev])):
            ax.scatter(t, y, color=cmap(k % cmap.N), s=10, linewidths=0, label=names[c], zorder=2)
    axes[0].set(ylabel="azimuth (°)", ylim=(-180, 180))
    axes[1].set(ylabel="elevation (°)", ylim=(-90, 90), xlabel="time (s)")
    files = f"{Path(csv).name}" + (f" over reference {Path(ref_csv).name} (grey)" if ref_csv else "")
    axes[0].set_title(f"{files}: {model}")
    if classes:
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="predictions")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_png)


def write_prediction_csv(
    path: str | os.PathLike, rows: Iterable, year: int = 2023, float_format: str = "{:.6f}"
) -> None:
    """Write detections (``SeldDetection`` or ``(frame, class, x, y, z[, dist])`` tuples) atomically as
    ``frame,class,0,x,y,z,0`` (2022/2023) or ``frame,class,0,x,y,z,dist`` with dist clipped at 0 (2024)."""
    if year not in (2022, 2023, 2024):
        raise ValueError(f"year must be 2022, 2023 or 2024, got {year}")
    out = []
    for r in rows:
        frame, cls, x, y, z, *rest = r
        dist = max(float(rest[0]), 0.0) if (year == 2024 and rest) else 0
        out.append((int(frame), int(cls), 0, float(x), float(y), float(z), dist))
    write_dcase_csv(path, out, float_format=float_format)
