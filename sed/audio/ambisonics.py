"""Spatial audio geometry shared by the SELD code: direction conventions, first-order
ambisonics (FOA) encoding and the tetrahedral microphone array (../shared/specs/seld.md 1.1).

Conventions (STARSS / DCASE): azimuth 0 at the front, counter-clockwise positive (+90 = left),
in [-180, 180]; elevation up positive in [-90, 90]; Cartesian ``x = cos(el) cos(az)``,
``y = cos(el) sin(az)``, ``z = sin(el)``. FOA is ACN channel order ``[W, Y, Z, X]`` with SN3D
normalisation: ``W = s, Y = s sin(az) cos(el), Z = s sin(el), X = s cos(az) cos(el)``.
"""

from __future__ import annotations

import math

import torch

SPEED_OF_SOUND = 343.0

#: Capsule directions (azimuth, elevation in degrees) and radius (m) of the STARSS tetrahedral array.
MIC_CAPSULES_DEG = ((45.0, 35.0), (-45.0, -35.0), (135.0, -35.0), (-135.0, 35.0))
MIC_RADIUS = 0.042


def polar_to_cartesian(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor) -> torch.Tensor:
    """Unit vectors ``[..., 3]`` (x, y, z) from azimuth and elevation in degrees."""
    az = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float64))
    el = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float64))
    return torch.stack([torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el)], dim=-1)


def cartesian_to_polar(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(azimuth, elevation) in degrees of ``[..., 3]`` vectors (need not be unit length)."""
    xyz = torch.as_tensor(xyz, dtype=torch.float64)
    x, y, z = xyz.unbind(-1)
    az = torch.rad2deg(torch.atan2(y, x))
    el = torch.rad2deg(torch.atan2(z, torch.sqrt(x * x + y * y)))
    return az, el


def foa_encode(signal: torch.Tensor, azimuth_deg, elevation_deg) -> torch.Tensor:
    """Encode a mono ``[T]`` signal as a plane wave from a direction into FOA ``[4, T]`` (ACN/SN3D).

    Azimuth and elevation may also be ``[T]`` tensors (a moving source)."""
    u = polar_to_cartesian(azimuth_deg, elevation_deg).to(signal.dtype)
    x, y, z = u.unbind(-1)
    return torch.stack([signal, signal * y, signal * z, signal * x])


def mic_capsule_vectors() -> torch.Tensor:
    """``[4, 3]`` Cartesian capsule positions of the STARSS tetrahedral array in metres."""
    az = torch.tensor([a for a, _ in MIC_CAPSULES_DEG])
    el = torch.tensor([e for _, e in MIC_CAPSULES_DEG])
    return polar_to_cartesian(az, el) * MIC_RADIUS


def mic_plane_wave(
    signal: torch.Tensor, azimuth_deg: float, elevation_deg: float, sample_rate: int
) -> torch.Tensor:
    """Free-field response ``[4, T]`` of the tetrahedral array to a far-field plane wave.

    Capsule i receives ``s(t + r_i . u / c)`` (it is closer to the source by ``r_i . u``),
    applied as an exact fractional delay in the frequency domain (circular). The real array
    sits on a rigid sphere; the free-field model keeps the geometry, which is what channel
    permutations (ACS) and GCC-PHAT lags depend on."""
    u = polar_to_cartesian(azimuth_deg, elevation_deg)
    advance = (mic_capsule_vectors() @ u) / SPEED_OF_SOUND  # seconds, [4]
    n = signal.shape[-1]
    spec = torch.fft.rfft(signal.double(), n=n)
    freqs = torch.fft.rfftfreq(n, d=1.0 / sample_rate).double()
    phase = torch.exp(2j * math.pi * freqs[None, :] * advance[:, None])
    return torch.fft.irfft(spec[None, :] * phase, n=n).to(signal.dtype)
