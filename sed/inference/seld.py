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
from sed.data.dcase_csv import read_dcase_csv, write_dcase_csv
from sed.errors import AudioError, SedError
from sed.fileio import atomic_save, derived_name
from sed.inference.device import resolve_device
from sed.models.accdoa import multi_accdoa_to_detections
from sed.models.loading import load_model

__all__ = ["infer_file", "load_seld_model", "plot_doa", "seld_infer", "write_prediction_csv"]


def load_seld_model(checkpoint: str | os.PathLike, device: str = "auto"):
    """(model in eval mode on ``device``, description) of a SELD checkpoint (``.ckpt`` of SELDTask, ``.pt``)."""
    model, desc = load_model(checkpoint, kind="seld")
    return model.to(resolve_device(device)).eval(), desc


def _frames_of(seconds: float, label_samples: int, sample_rate: int, what: str) -> int:
    n = seconds * sample_rate / label_samples
    if seconds <= 0 or not math.isclose(n, round(n), abs_tol=1e-6):
        raise ValueError(f"{what} must be a positive multiple of {label_samples / sample_rate:g} s, got {seconds}")
    return round(n)


@torch.inference_mode()
def infer_file(model, path: str | os.PathLike, window: float = 5.0, hop: float = 5.0, batch_size: int = 8
               ) -> np.ndarray:
    """Stitched multi-ACCDOA output ``[samples // 2400, out_dim]`` (float32) of one file (module docstring)."""
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
                    acc[f0:f0 + n] += o[:n]
                    cnt[f0:f0 + n] += 1

    buf, buf_start, total, next_start, covered = None, 0, 0, 0, 0  # all in label frames except buf/total
    for block in iter_blocks(path, lab * hf, sample_rate=sr, num_channels=4):
        buf = block if buf is None else torch.cat([buf, block], dim=1)
        total += block.shape[1]
        while (next_start - buf_start + wf) * lab <= buf.shape[1]:
            a = (next_start - buf_start) * lab
            pending.append((next_start, buf[:, a:a + wf * lab].clone()))
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
        raise AudioError(path, f"too short: {total} samples at {sr} Hz is less than one {lab}-sample label frame")
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


def seld_infer(audio_paths: Sequence[str | os.PathLike], checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
               window: float = 5.0, hop: float = 5.0, batch_size: int = 8, device: str = "auto", year: int = 2023,
               threshold: float = 0.5, unify_threshold: float = 15.0, progress: bool = False
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
            results.append((p, str(SedError(p, f"same file name as {seen[name]}; its CSV would be overwritten"))))
            continue
        try:
            output = infer_file(model, p, window, hop, batch_size)
            dets = multi_accdoa_to_detections(output, model.num_classes, threshold=threshold,
                                              unify_threshold=unify_threshold)
            write_prediction_csv(out / name, dets, year=year)
            seen[name] = p
            results.append((p, None))
        except SedError as e:
            results.append((p, str(e)))
        except (RuntimeError, ValueError, OSError) as e:
            results.append((p, str(SedError(p, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))))
    return results


def plot_doa(csv: str | os.PathLike, out_png: str | os.PathLike, ref_csv: str | os.PathLike | None = None,
             labels: Sequence[str] | None = None) -> Path:
    """Azimuth and elevation against time (0.1 s frames) per class: prediction dots over the reference
    (wide, faint) when ``ref_csv`` is given. Written with matplotlib's Agg backend, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = read_dcase_csv(csv)
    ref = read_dcase_csv(ref_csv) if ref_csv is not None else []
    classes = sorted({e.cls for e in (*pred, *ref)})
    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    for k, c in enumerate(classes):
        color = cmap(k % 20)
        name = labels[c] if labels is not None and c < len(labels) else f"class {c}"
        for events, style in ((ref, {"s": 40, "alpha": 0.25, "marker": "s"}), (pred, {"s": 6, "alpha": 0.9})):
            ev = [e for e in events if e.cls == c]
            if not ev:
                continue
            t = [e.frame * 0.1 for e in ev]
            lab = f"{name} (ref)" if events is ref else name
            axes[0].scatter(t, [e.azimuth for e in ev], color=color, label=lab, linewidths=0, **style)
            axes[1].scatter(t, [e.elevation for e in ev], color=color, linewidths=0, **style)
    axes[0].set_ylabel("azimuth (deg)")
    axes[0].set_ylim(-180, 180)
    axes[1].set_ylabel("elevation (deg)")
    axes[1].set_ylim(-90, 90)
    axes[1].set_xlabel("time (s)")
    axes[0].set_title(f"{Path(csv).name}" + (f" over reference {Path(ref_csv).name}" if ref_csv else ""))
    if classes:
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return out


def write_prediction_csv(path: str | os.PathLike, rows: Iterable, year: int = 2023,
                         float_format: str = "{:.6f}") -> None:
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
