"""Audio channel swapping (ACS) and Mazzon's 16 FOA rotations for SELD (../shared/specs/seld.md 8).

Conventions are those of :mod:`sed.audio.ambisonics`: azimuth counter-clockwise from the front
(+90 = left), elevation up, in degrees; Cartesian ``x = cos(el) cos(az)``, ``y = cos(el) sin(az)``,
``z = sin(el)``; FOA in ACN order ``[W, Y, Z, X]``; MIC channels are the STARSS capsules M1..M4.

A transform is defined only by its label map ``az' = a * az + b``, ``el' = c * el`` (``a, c`` = +-1,
``b`` a multiple of 90 degrees). Everything else is derived from the physics, not copied:

* ``rotation`` R, the 3x3 signed permutation with ``R u(az, el) = u(az', el')``:
  ``[[cos b, -a sin b, 0], [sin b, a cos b, 0], [0, 0, c]]``.
* FOA: W is unchanged and ``[X', Y', Z'] = R [X, Y, Z]``, written as
  ``new ACN channel k = foa_sign[k] * old channel foa_src[k]``.
* MIC: ``new channel i = old channel mic_src[i]`` where ``r[mic_src[i]] = R^T r[i]`` over the
  capsule positions r (capsule i must hear the rotated field as capsule ``R^T r_i`` heard the
  original). Such a permutation exists for 8 of the 16 transforms only: the ACS set.

Indexing is 0-based: ``ACS_TRANSFORMS[k]`` is row ``#k`` of the spec 8.3 table (k = 0..7, 0 = identity)
and ``MAZZON16_TRANSFORMS[k]`` is row ``#k+1`` of the spec 8.2 table (k = 0..15, 0 = identity).
Applying a transform is pure indexing and sign flips: exact, any dtype/device, autograd-friendly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from sed.audio.ambisonics import mic_capsule_vectors

_ACN_OF_AXIS = (3, 1, 2)  # Cartesian axis x, y, z -> ACN channel index of X, Y, Z


def rotation_matrix(a: int, b: int, c: int) -> tuple[tuple[int, int, int], ...]:
    """Signed-permutation matrix R (rows x', y', z') of the label map ``az' = a*az + b, el' = c*el``."""
    if a not in (1, -1) or c not in (1, -1) or b % 90:
        raise ValueError(f"label map needs a, c in {{1, -1}} and b a multiple of 90, got a={a} b={b} c={c}")
    cb, sb = round(math.cos(math.radians(b))), round(math.sin(math.radians(b)))
    return ((cb, -a * sb, 0), (sb, a * cb, 0), (0, 0, c))


def _signed_rows(rotation) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(src, sign) with ``(R v)[k] = sign[k] * v[src[k]]`` for a signed permutation R."""
    src, sign = [], []
    for row in rotation:
        (j,) = [j for j, v in enumerate(row) if v]
        src.append(j)
        sign.append(int(row[j]))
    return tuple(src), tuple(sign)


def foa_channel_map(rotation) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(src, sign) over ACN ``[W, Y, Z, X]``: new channel k = ``sign[k] * old[src[k]]``; W unchanged."""
    xyz_src, xyz_sign = _signed_rows(rotation)
    src, sign = [0, 0, 0, 0], [1, 1, 1, 1]
    for k in range(3):
        src[_ACN_OF_AXIS[k]] = _ACN_OF_AXIS[xyz_src[k]]
        sign[_ACN_OF_AXIS[k]] = xyz_sign[k]
    return tuple(src), tuple(sign)


def mic_permutation(rotation, tol: float = 1e-9) -> tuple[int, ...]:
    """0-based p with ``r[p[i]] = R^T r[i]`` over the capsule positions; ValueError if none exists."""
    r = mic_capsule_vectors()
    r = r / r.norm(dim=-1, keepdim=True)
    target = r @ torch.tensor(rotation, dtype=r.dtype)  # row i = (R^T r_i)^T
    dist = torch.cdist(target, r)
    best, src = dist.min(dim=1)
    if bool((best > tol).any()) or len(set(src.tolist())) != len(src):
        raise ValueError(
            f"rotation {rotation} maps the tetrahedral capsules off the array: no channel permutation"
        )
    return tuple(src.tolist())


@dataclass(frozen=True)
class SpatialTransform:
    """One rotation/reflection: label map, derived Cartesian matrix and channel maps (module docstring)."""

    a: int
    b: int
    c: int
    rotation: tuple[tuple[int, int, int], ...]
    xyz_src: tuple[int, ...]
    xyz_sign: tuple[int, ...]
    foa_src: tuple[int, ...]
    foa_sign: tuple[int, ...]
    mic_src: tuple[int, ...] | None  # None: not realisable on the tetrahedral array

    @classmethod
    def from_labels(cls, a: int, b: int, c: int, require_mic: bool = False) -> SpatialTransform:
        rot = rotation_matrix(a, b, c)
        try:
            mic = mic_permutation(rot)
        except ValueError:
            if require_mic:
                raise
            mic = None
        return cls(a, b, c, rot, *_signed_rows(rot), *foa_channel_map(rot), mic)

    @property
    def label(self) -> str:
        az = ("az" if self.a > 0 else "-az") + (f"{self.b:+d}" if self.b else "")
        return f"{az}, {'el' if self.c > 0 else '-el'}"


#: Spec 8.2 rows #1..#16 as (a, b, c); index k here = row #k+1.
MAZZON16_LABELS = tuple((a, b, c) for a in (1, -1) for b in (0, 90, -90, 180) for c in (1, -1))
#: Spec 8.3 rows #0..#7 as (a, b, c), in that order.
ACS_LABELS = (
    (1, 0, 1),
    (1, -90, -1),
    (-1, -90, 1),
    (-1, 0, -1),
    (1, 90, -1),
    (-1, 90, 1),
    (1, 180, 1),
    (-1, 180, -1),
)

MAZZON16_TRANSFORMS = tuple(SpatialTransform.from_labels(*t) for t in MAZZON16_LABELS)
ACS_TRANSFORMS = tuple(SpatialTransform.from_labels(*t, require_mic=True) for t in ACS_LABELS)
_TABLES = {"acs": ACS_TRANSFORMS, "mazzon16": MAZZON16_TRANSFORMS}


def _table(table: str) -> tuple[SpatialTransform, ...]:
    if table not in _TABLES:
        raise ValueError(f"unknown transform table {table!r}; expected one of {sorted(_TABLES)}")
    return _TABLES[table]


def _maps(table: str, field: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, K]`` src and sign tensors of one channel map ("xyz", "foa", "mic") of a table."""
    rows = _table(table)
    src = torch.tensor([getattr(t, f"{field}_src") for t in rows])
    sign = (
        torch.ones_like(src) if field == "mic" else torch.tensor([getattr(t, f"{field}_sign") for t in rows])
    )
    return src, sign


def _signed_gather(x: torch.Tensor, dim: int, src: torch.Tensor, sign: torch.Tensor, index) -> torch.Tensor:
    """``out[..., k, ...] = sign[index, k] * x[..., src[index, k], ...]`` along ``dim``.

    ``index`` is an int, or an integer tensor whose shape is a prefix of ``x.shape[:dim]``
    (e.g. ``[B]``: one row per sample), broadcast over the remaining leading dims."""
    dim = dim % x.ndim
    n, k = src.shape
    if x.shape[dim] != k:
        raise ValueError(f"expected {k} entries along dim {dim}, got shape {tuple(x.shape)}")
    trail = (1,) * (x.ndim - dim - 1)
    if not isinstance(index, torch.Tensor) or index.ndim == 0:
        i = int(index)
        if not 0 <= i < n:
            raise IndexError(f"transform index {i} out of range 0..{n - 1}")
        return x.index_select(dim, src[i].to(x.device)) * sign[i].to(x.device, x.dtype).view(k, *trail)
    index = index.to(x.device, torch.long)
    if index.ndim > dim:
        raise ValueError(
            f"index shape {tuple(index.shape)} is not a prefix of the leading dims {tuple(x.shape[:dim])}"
        )
    if index.numel() and not (0 <= int(index.min()) and int(index.max()) < n):
        raise IndexError(f"transform indices must lie in 0..{n - 1}")
    shape = (*index.shape, *(1,) * (dim - index.ndim), k, *trail)
    s = src.to(x.device)[index].view(shape).expand(*x.shape[:dim], k, *x.shape[dim + 1 :])
    return torch.gather(x, dim, s) * sign.to(x.device, x.dtype)[index].view(shape)


def transform_xyz(doa_xyz: torch.Tensor, index, table: str = "acs") -> torch.Tensor:
    """``R u`` for Cartesian vectors ``[..., 3]`` (any length, including zero = inactive)."""
    return _signed_gather(doa_xyz, -1, *_maps(table, "xyz"), index)


def transform_polar(azimuth_deg, elevation_deg, index: int, table: str = "acs"):
    """Transformed labels ``(a*az + b, c*el)`` in degrees, azimuth wrapped to [-180, 180).

    Works on floats, numpy arrays and tensors; ``table`` is "acs" (0..7) or "mazzon16" (0..15)."""
    rows = _table(table)
    if not 0 <= index < len(rows):
        raise IndexError(f"transform index {index} out of range 0..{len(rows) - 1}")
    t = rows[index]
    return (t.a * azimuth_deg + t.b + 180.0) % 360.0 - 180.0, t.c * elevation_deg


def transform_adpit_targets(targets: torch.Tensor, index, table: str = "acs") -> torch.Tensor:
    """Transform multi-ACCDOA ADPIT targets ``[..., frames, 6, 4|5, C]`` (dim -2 = activity, x, y, z
    [, distance]): x, y, z are rotated, activity and distance kept. ``index`` as in :func:`apply_acs`."""
    if targets.ndim < 3 or targets.shape[-2] not in (4, 5):
        raise ValueError(f"ADPIT targets must be [..., 6, 4|5, C], got shape {tuple(targets.shape)}")
    xyz = _signed_gather(targets[..., 1:4, :], -2, *_maps(table, "xyz"), index)
    return torch.cat([targets[..., :1, :], xyz, targets[..., 4:, :]], dim=-2)


def _apply(audio, doa_xyz, index, table: str, fmt: str):
    if fmt not in ("foa", "mic"):
        raise ValueError(f"fmt must be 'foa' or 'mic', got {fmt!r}")
    if audio is not None:
        audio = _signed_gather(audio, -2, *_maps(table, fmt), index)
    if doa_xyz is not None:
        doa_xyz = transform_xyz(doa_xyz, index, table)
    return audio, doa_xyz


def apply_acs(audio: torch.Tensor | None, doa_xyz: torch.Tensor | None, index, fmt: str = "foa"):
    """ACS row ``index`` (0..7, spec 8.3 order) on audio ``[..., 4, T]`` and DOAs ``[..., 3]``.

    ``index`` is an int, or an integer tensor whose shape is a prefix of the leading dims (e.g.
    ``[B]``, one row per sample). ``fmt``: "foa" (ACN [W, Y, Z, X]) or "mic" (M1..M4). Either
    input may be None. Returns ``(audio, doa_xyz)``."""
    return _apply(audio, doa_xyz, index, "acs", fmt)


def apply_foa_rotation(audio: torch.Tensor | None, doa_xyz: torch.Tensor | None, index):
    """Mazzon transform ``index`` (0..15 = spec 8.2 rows 1..16) on FOA ``[..., 4, T]`` and ``[..., 3]``."""
    return _apply(audio, doa_xyz, index, "mazzon16", "foa")


class RandomACS(nn.Module):
    """Per-sample random ACS for training: ``forward(audio [B, 4, T], targets [B, frames, 6, 4|5, C])``.

    Each sample, with probability ``p``, gets a row drawn uniformly from all 8 ACS rows, identity
    included (so ``p = 1`` reproduces the distribution of the static 8x expansion and a sample is
    actually changed with probability ``7p/8``); otherwise it is left as is. Audio and targets of a
    sample always get the same row. In eval mode the module is the identity. ``targets`` may be None.
    """

    def __init__(self, p: float = 1.0, fmt: str = "foa", generator: torch.Generator | None = None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        if fmt not in ("foa", "mic"):
            raise ValueError(f"fmt must be 'foa' or 'mic', got {fmt!r}")
        self.p, self.fmt, self.generator = p, fmt, generator

    def extra_repr(self) -> str:
        return f"p={self.p}, fmt={self.fmt!r}"

    def sample_index(self, batch_size: int, device=None) -> torch.Tensor:
        """``[B]`` long tensor of ACS rows drawn as described in the class docstring."""
        gen_device = self.generator.device if self.generator is not None else device
        rows = torch.randint(len(ACS_TRANSFORMS), (batch_size,), generator=self.generator, device=gen_device)
        keep = torch.rand(batch_size, generator=self.generator, device=gen_device) >= self.p
        return rows.masked_fill(keep, 0).to(device)

    def forward(self, audio: torch.Tensor, targets: torch.Tensor | None = None):
        if not self.training or self.p == 0.0:
            return audio, targets
        index = self.sample_index(audio.shape[0], audio.device)
        audio, _ = apply_acs(audio, None, index, self.fmt)
        if targets is not None:
            targets = transform_adpit_targets(targets, index)
        return audio, targets


class ACSExpandedDataset(Dataset):
    """Static 8x ACS expansion: item ``i`` is base item ``i // 8`` under ACS row ``i % 8``.

    Base items are dicts with "audio" ``[4, T]`` and "target" (ADPIT ``[frames, 6, 4|5, C]``); those
    two are transformed, every other key is passed through unchanged (it is not rotated)."""

    def __init__(self, dataset, fmt: str = "foa"):
        if fmt not in ("foa", "mic"):
            raise ValueError(f"fmt must be 'foa' or 'mic', got {fmt!r}")
        self.dataset, self.fmt = dataset, fmt

    def __len__(self) -> int:
        return len(ACS_TRANSFORMS) * len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for ACSExpandedDataset of length {n}")
        i %= n
        item = dict(self.dataset[i // len(ACS_TRANSFORMS)])
        row = i % len(ACS_TRANSFORMS)
        item["audio"], _ = apply_acs(item["audio"], None, row, self.fmt)
        item["target"] = transform_adpit_targets(item["target"], row)
        return item


# ---------------------------------------------------------------------- feature domain
#
# ACS on cached features (sed.audio.spatial), equal to the features of the transformed audio:
# * FOA [logmel W, Y, Z, X, IV_y, IV_z, IV_x]: log-mel channels are permuted like the ACN channels
#   (a sign flip does not change power), IV channels permuted and sign-flipped like the Cartesian
#   axes (the IV normaliser |W|^2 + (|Y|^2 + |Z|^2 + |X|^2) / 3 is invariant). Exact.
# * MIC [logmel M1..M4, GCC pairs 12, 13, 14, 23, 24, 34]: log-mel channels permuted like the capsules;
#   new pair (i, j) is old pair (p[i], p[j]); when p[i] > p[j] the cross-spectrum is conjugated, so
#   the GCC is reversed in lag (l -> -l). Lags run -F/2 .. F/2 - 1: lag -F/2 would need lag +F/2, which
#   is not stored; that one bin keeps the old lag -F/2 value (a far, non-physical lag: the array's
#   largest delay is ~5 samples at 24 kHz). All other bins are exact.
_PAIRS = tuple((i, j) for i in range(4) for j in range(i + 1, 4))


def _feature_maps(table: str, fmt: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[N, C]`` channel src, sign and lag-reversal flag tables of the feature channels."""
    src, sign, flip = [], [], []
    for t in _table(table):
        if fmt == "foa":
            src.append(list(t.foa_src) + [3 + s for s in t.foa_src[1:]])
            sign.append([1] * 4 + list(t.foa_sign[1:]))
            flip.append([False] * 7)
        else:
            if t.mic_src is None:
                raise ValueError(f"transform {t.label} of table {table!r} has no MIC channel permutation")
            p = t.mic_src
            pairs = [(p[i], p[j]) for i, j in _PAIRS]
            src.append(list(p) + [4 + _PAIRS.index((min(a, b), max(a, b))) for a, b in pairs])
            sign.append([1] * 10)
            flip.append([False] * 4 + [a > b for a, b in pairs])
    return torch.tensor(src), torch.tensor(sign), torch.tensor(flip)


def apply_acs_features(features: torch.Tensor, index, fmt: str = "foa", table: str = "acs") -> torch.Tensor:
    """ACS row ``index`` on unstandardised SELD features ``[..., C, T, F]`` (C = 7 for FOA log-mel + IV,
    10 for MIC log-mel + GCC-PHAT): the features of ``apply_acs(audio, ...)`` computed from the
    features of ``audio`` (see the notes above: exact, except the lag -F/2 bin of lag-reversed GCC pairs).

    ``index`` is an int or an integer tensor whose shape is a prefix of the leading dims (``[B]``).
    ``table="mazzon16"`` works for FOA. Standardised features are *not* transformed correctly (the
    per-channel statistics differ): apply this before the model's standardiser."""
    if fmt not in ("foa", "mic"):
        raise ValueError(f"fmt must be 'foa' or 'mic', got {fmt!r}")
    channels = 7 if fmt == "foa" else 10
    if features.ndim < 3 or features.shape[-3] != channels:
        raise ValueError(f"{fmt} features must be [..., {channels}, T, F], got shape {tuple(features.shape)}")
    src, sign, flip = _feature_maps(table, fmt)
    out = _signed_gather(features, -3, src, sign, index)
    if fmt == "foa":
        return out
    nb = features.shape[-1]
    rev = (-torch.arange(nb, device=features.device)) % nb  # lag l -> -l; position 0 (lag -F/2) stays
    if not isinstance(index, torch.Tensor) or index.ndim == 0:
        f = flip[int(index)].to(features.device).view(channels, 1, 1)
    else:
        index = index.to(features.device, torch.long)
        lead = out.ndim - 3
        f = flip.to(features.device)[index].view(*index.shape, *(1,) * (lead - index.ndim), channels, 1, 1)
    return torch.where(f, out.index_select(-1, rev), out)
