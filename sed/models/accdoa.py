"""Multi-ACCDOA decoding: the SELD models' output -> detections (../shared/specs/seld.md 3.1, 5).

Shared by validation during training (:mod:`sed.tasks.seld`) and inference (:mod:`sed.inference.seld`,
which also writes the detections as DCASE CSVs).

Model output per 100-ms frame: ``[frames, 3*3*C]`` (flat index ``track*3C + axis*C + class``, axes
x, y, z) or, with distance (DCASE2024), ``[frames, 3*4*C]`` (index ``track*4C + axis*C + class``, the
4th axis the distance in metres). Per frame and class, as the official ``test_epoch``:

1. track ``i`` is active when ``||(x_i, y_i, z_i)|| > threshold`` (0.5);
2. ``s01, s12, s20`` flag pairs of active tracks less than ``unify_threshold`` (15 deg) apart
   (vectors normalised with the official ``sqrt(x^2+y^2+z^2+1e-10)``);
3. no flag: every active track is output; one flag (say ``s01``): the third track if active, then
   the mean ``(v0+v1)/2``; two or more flags: one vector ``(v0+v1+v2)/3``. Means are of the raw
   (unnormalised) vectors, and the distance is averaged the same way.

Negative distances are clipped to 0 per track *before* unifying, as the DCASE2024 baseline does
(``dist0[dist0 < 0.] = 0.`` in ``get_multi_accdoa_labels``), and again when writing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from sed.data.corpora.dcase_csv import SeldEvent

ACTIVITY_THRESHOLD = 0.5
UNIFY_THRESHOLD_DEG = 15.0
NB_TRACKS = 3


class SeldDetection(NamedTuple):
    """One output row: Cartesian DOA (not normalised) and distance in metres (0 without distance)."""

    frame: int
    cls: int
    x: float
    y: float
    z: float
    distance: float = 0.0

    def to_event(self) -> SeldEvent:
        """The same detection as a polar ``SeldEvent`` (track 0), as ``read_dcase_csv`` would return it."""
        az = math.degrees(math.atan2(self.y, self.x))
        el = math.degrees(math.atan2(self.z, math.hypot(self.x, self.y)))
        return SeldEvent(self.frame, self.cls, 0, az, el, self.distance)


def _to_numpy(output) -> np.ndarray:
    if hasattr(output, "detach"):  # torch.Tensor
        output = output.detach().cpu().double().numpy()
    return np.asarray(output, dtype=np.float64)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between ``[..., 3]`` vectors (official ``distance_between_cartesian_coordinates``)."""
    na = np.sqrt((a * a).sum(-1, keepdims=True) + 1e-10)
    nb = np.sqrt((b * b).sum(-1, keepdims=True) + 1e-10)
    return np.degrees(np.arccos(np.clip(((a / na) * (b / nb)).sum(-1), -1, 1)))


def unify_tracks(
    vectors: np.ndarray, threshold: float = ACTIVITY_THRESHOLD, unify_threshold: float = UNIFY_THRESHOLD_DEG
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the activity threshold and the unify step to ``[..., 3 tracks, A]`` track vectors
    (``A`` = 3 for x, y, z or 4 with distance). Returns ``(candidates [..., 3, A], valid [..., 3])``:
    the output rows of each (frame, class) are ``candidates[valid]`` in slot order."""
    v = np.asarray(vectors, dtype=np.float64)
    xyz = v[..., :3]
    active = np.linalg.norm(xyz, axis=-1) > threshold

    def close(i: int, j: int) -> np.ndarray:
        return (
            active[..., i] & active[..., j] & (_angle_deg(xyz[..., i, :], xyz[..., j, :]) < unify_threshold)
        )

    s01, s12, s20 = close(0, 1), close(1, 2), close(2, 0)
    n = s01.astype(int) + s12 + s20
    v0, v1, v2 = v[..., 0, :], v[..., 1, :], v[..., 2, :]
    cand = np.where((n == 0)[..., None, None], v, 0.0)
    valid = np.where((n == 0)[..., None], active, False)
    # exactly one close pair: keep the third track if active, then the mean of the pair
    for flag, k, mean in ((s01, 2, (v0 + v1) / 2), (s12, 0, (v1 + v2) / 2), (s20, 1, (v2 + v0) / 2)):
        one = (n == 1) & flag
        cand[..., 0, :] = np.where(one[..., None], v[..., k, :], cand[..., 0, :])
        cand[..., 1, :] = np.where(one[..., None], mean, cand[..., 1, :])
        valid[..., 0] |= one & active[..., k]
        valid[..., 1] |= one
    many = n >= 2  # two or more close pairs: a single mean of all three tracks
    cand[..., 0, :] = np.where(many[..., None], (v0 + v1 + v2) / 3, cand[..., 0, :])
    valid[..., 0] |= many
    return cand, valid


def multi_accdoa_to_detections(
    output,
    nb_classes: int,
    *,
    threshold: float = ACTIVITY_THRESHOLD,
    unify_threshold: float = UNIFY_THRESHOLD_DEG,
    frame_offset: int = 0,
) -> list[SeldDetection]:
    """Decode one file's multi-ACCDOA output ``[frames, 3*3*C]`` or ``[frames, 3*4*C]`` (numpy or torch)
    into detections ordered by frame, class, then output slot (the official row order)."""
    out = _to_numpy(output)
    if out.ndim != 2:
        raise ValueError(f"expected [frames, features], got shape {tuple(out.shape)}")
    frames, dim = out.shape
    axes, rem = divmod(dim, NB_TRACKS * nb_classes)
    if rem or axes not in (3, 4):
        raise ValueError(f"{dim} features is neither 3*3*{nb_classes} nor 3*4*{nb_classes}")
    v = out.reshape(frames, NB_TRACKS, axes, nb_classes).transpose(0, 3, 1, 2).copy()  # [T, C, track, axis]
    if axes == 4:
        v[..., 3] = np.maximum(v[..., 3], 0.0)
    cand, valid = unify_tracks(v, threshold, unify_threshold)
    t_idx, c_idx, k_idx = np.nonzero(valid)
    rows = cand[t_idx, c_idx, k_idx]
    dist = rows[:, 3] if axes == 4 else np.zeros(len(rows))
    cols = ((t_idx + frame_offset).tolist(), c_idx.tolist(), *rows[:, :3].T.tolist(), dist.tolist())
    return list(map(SeldDetection, *cols))
