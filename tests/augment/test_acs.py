"""ACS / Mazzon transforms checked against plane-wave physics and the spec's tables (seld.md 8)."""

from __future__ import annotations

import math

import pytest
import torch

from sed.audio.ambisonics import cartesian_to_polar, foa_encode, mic_plane_wave, polar_to_cartesian
from sed.augment.acs import (
    ACS_TRANSFORMS,
    MAZZON16_TRANSFORMS,
    ACSExpandedDataset,
    RandomACS,
    apply_acs,
    apply_foa_rotation,
    mic_permutation,
    rotation_matrix,
    transform_adpit_targets,
    transform_polar,
    transform_xyz,
)

SR = 24000
N_DIRS = 64

# Spec 8.3: (azimuth label, elevation label, FOA new [W, Y, Z, X], MIC new channels 1-based).
SPEC_ACS = [
    ("az", "el", "W, Y, Z, X", (1, 2, 3, 4)),
    ("az-90", "-el", "W, -X, -Z, Y", (3, 1, 4, 2)),
    ("-az-90", "el", "W, -X, Z, -Y", (4, 2, 3, 1)),
    ("-az", "-el", "W, -Y, -Z, X", (2, 1, 4, 3)),
    ("az+90", "-el", "W, X, -Z, -Y", (2, 4, 1, 3)),
    ("-az+90", "el", "W, X, Z, Y", (1, 3, 2, 4)),
    ("az+180", "el", "W, -Y, Z, -X", (4, 3, 2, 1)),
    ("-az+180", "-el", "W, Y, -Z, -X", (3, 4, 1, 2)),
]
# Spec 8.2 rows #1..#16.
SPEC_MAZZON = [
    ("az", "el", "W, Y, Z, X"),
    ("az", "-el", "W, Y, -Z, X"),
    ("az+90", "el", "W, X, Z, -Y"),
    ("az+90", "-el", "W, X, -Z, -Y"),
    ("az-90", "el", "W, -X, Z, Y"),
    ("az-90", "-el", "W, -X, -Z, Y"),
    ("az+180", "el", "W, -Y, Z, -X"),
    ("az+180", "-el", "W, -Y, -Z, -X"),
    ("-az", "el", "W, -Y, Z, X"),
    ("-az", "-el", "W, -Y, -Z, X"),
    ("-az+90", "el", "W, X, Z, Y"),
    ("-az+90", "-el", "W, X, -Z, Y"),
    ("-az-90", "el", "W, -X, Z, -Y"),
    ("-az-90", "-el", "W, -X, -Z, -Y"),
    ("-az+180", "el", "W, Y, Z, -X"),
    ("-az+180", "-el", "W, Y, -Z, -X"),
]


def foa_string(src, sign) -> str:
    return ", ".join(("-" if s < 0 else "") + "WYZX"[c] for c, s in zip(src, sign))


def parse_foa(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    names = [n.strip() for n in text.split(",")]
    return tuple("WYZX".index(n[-1]) for n in names), tuple(-1 if n.startswith("-") else 1 for n in names)


def random_directions(n: int = N_DIRS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    az = torch.rand(n, generator=g, dtype=torch.float64) * 360.0 - 180.0
    el = (
        torch.rad2deg(torch.asin(torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1)) * 0.95
    )  # |el| < 86
    return az, el


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    return torch.randn(4800, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(scope="module")
def foa_waves(noise):
    az, el = random_directions()
    return az, el, torch.stack([foa_encode(noise, float(a), float(e)) for a, e in zip(az, el)])  # [N, 4, T]


def intensity_direction(foa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Broadband intensity-vector DOA of ``[..., 4, T]`` ACN FOA, in degrees."""
    w, y, z, x = foa.unbind(-2)
    ix, iy, iz = (w * x).mean(-1), (w * y).mean(-1), (w * z).mean(-1)
    return torch.rad2deg(torch.atan2(iy, ix)), torch.rad2deg(torch.atan2(iz, torch.sqrt(ix**2 + iy**2)))


def angle_diff(a, b):
    return ((a - b + 180.0) % 360.0 - 180.0).abs()


def foa_direction_error(foa_waves, transform_audio, index, table) -> float:
    """Max error (deg) between the intensity DOA of the transformed audio and transform_polar's label."""
    az, el, audio = foa_waves
    az_hat, el_hat = intensity_direction(transform_audio(audio))
    az_ref, el_ref = transform_polar(az, el, index, table=table)
    return max(float(angle_diff(az_hat, az_ref).max()), float((el_hat - el_ref).abs().max()))


# --------------------------------------------------------------------------------------- tables


def test_acs_tables_equal_spec():
    assert len(ACS_TRANSFORMS) == 8
    for t, (az, el, foa, mic) in zip(ACS_TRANSFORMS, SPEC_ACS):
        assert t.label == f"{az}, {el}"
        assert foa_string(t.foa_src, t.foa_sign) == foa
        assert tuple(i + 1 for i in t.mic_src) == mic
    # the rows a widely copied public script gets wrong (spec 8.3 warning)
    assert foa_string(ACS_TRANSFORMS[4].foa_src, ACS_TRANSFORMS[4].foa_sign) != "W, X, -Z, Y"
    assert [i + 1 for i in ACS_TRANSFORMS[1].mic_src] == [3, 1, 4, 2]
    assert [i + 1 for i in ACS_TRANSFORMS[4].mic_src] == [2, 4, 1, 3]


def test_mazzon_tables_equal_spec():
    assert len(MAZZON16_TRANSFORMS) == 16
    for t, (az, el, foa) in zip(MAZZON16_TRANSFORMS, SPEC_MAZZON):
        assert t.label == f"{az}, {el}"
        assert foa_string(t.foa_src, t.foa_sign) == foa


def test_exactly_the_acs_rows_are_mic_permutations():
    realisable = {(t.a, t.b, t.c) for t in MAZZON16_TRANSFORMS if t.mic_src is not None}
    assert realisable == {(t.a, t.b, t.c) for t in ACS_TRANSFORMS}
    with pytest.raises(ValueError, match="no channel permutation"):
        mic_permutation(rotation_matrix(1, 0, -1))  # elevation flip alone
    with pytest.raises(ValueError):
        rotation_matrix(1, 45, 1)


def test_rotation_maps_label_directions():
    az, el = random_directions(32)
    for table, rows in (("acs", ACS_TRANSFORMS), ("mazzon16", MAZZON16_TRANSFORMS)):
        for k, t in enumerate(rows):
            rot = torch.tensor(t.rotation, dtype=torch.float64)
            assert torch.equal(rot @ rot.T, torch.eye(3, dtype=torch.float64))
            u_ref = polar_to_cartesian(*transform_polar(az, el, k, table=table))
            torch.testing.assert_close(polar_to_cartesian(az, el) @ rot.T, u_ref)
            a2, _ = transform_polar(az, el, k, table=table)
            assert bool(((a2 >= -180) & (a2 < 180)).all())


# ---------------------------------------------------------------------------------- FOA physics


@pytest.mark.parametrize("index", range(8))
def test_acs_foa_plane_wave_direction(foa_waves, index):
    az, el, audio = foa_waves
    err = foa_direction_error(foa_waves, lambda x: apply_acs(x, None, index)[0], index, "acs")
    assert err < 0.01
    _, doa = apply_acs(audio, polar_to_cartesian(az, el), index)
    torch.testing.assert_close(doa, polar_to_cartesian(*transform_polar(az, el, index)))


@pytest.mark.parametrize("index", range(16))
def test_mazzon_foa_plane_wave_direction(foa_waves, index):
    az, el, audio = foa_waves
    err = foa_direction_error(foa_waves, lambda x: apply_foa_rotation(x, None, index)[0], index, "mazzon16")
    assert err < 0.01
    _, doa = apply_foa_rotation(audio, polar_to_cartesian(az, el), index)
    torch.testing.assert_close(doa, polar_to_cartesian(*transform_polar(az, el, index, table="mazzon16")))


def test_direction_check_rejects_the_buggy_public_row(foa_waves):
    src, sign = parse_foa("W, X, -Z, Y")  # public script's row for "azimuth + 90, -elevation"
    sign_t = torch.tensor(sign, dtype=torch.float64)[:, None]
    err = foa_direction_error(foa_waves, lambda x: x[..., list(src), :] * sign_t, 4, "acs")
    assert err > 90.0


# ---------------------------------------------------------------------------------- MIC physics


@pytest.mark.parametrize("index", range(8))
def test_acs_mic_plane_wave(noise, index):
    az, el = random_directions(24, seed=index)
    for a, e in zip(az.tolist(), el.tolist()):
        wave = mic_plane_wave(noise, a, e, SR)
        a2, e2 = transform_polar(a, e, index)
        expected = mic_plane_wave(noise, a2, e2, SR)
        assert torch.allclose(apply_acs(wave, None, index, fmt="mic")[0], expected, atol=1e-6)


def test_mic_check_rejects_swapped_public_rows(noise):
    wave = mic_plane_wave(noise, 30.0, 20.0, SR)
    a2, e2 = transform_polar(30.0, 20.0, 1)  # az - 90, -el
    expected = mic_plane_wave(noise, a2, e2, SR)
    assert not torch.allclose(wave[[1, 3, 0, 2]], expected, atol=1e-3)  # the public (2, 4, 1, 3)
    assert torch.allclose(wave[[2, 0, 3, 1]], expected, atol=1e-6)


# ------------------------------------------------------------------------------------ tensor API


def test_apply_acs_batch_dims_and_per_sample_index():
    audio = torch.randn(2, 3, 4, 50)
    doa = torch.randn(2, 3, 7, 3)
    out, doa_out = apply_acs(audio, doa, 4)
    assert out.shape == audio.shape and doa_out.shape == doa.shape
    torch.testing.assert_close(out[1, 2], apply_acs(audio[1, 2], None, 4)[0])
    index = torch.tensor([2, 6])  # one row per leading sample, broadcast over dim 1
    out, doa_out = apply_acs(audio, doa, index, fmt="mic")
    for b in range(2):
        ref_a, ref_d = apply_acs(audio[b], doa[b], int(index[b]), fmt="mic")
        assert torch.equal(out[b], ref_a) and torch.equal(doa_out[b], ref_d)
    with pytest.raises(IndexError):
        apply_acs(audio, None, 8)
    with pytest.raises(ValueError):
        apply_acs(audio, None, 0, fmt="fuma")
    with pytest.raises(ValueError):
        apply_acs(torch.randn(2, 3, 50), None, 0)


def test_apply_acs_gradient_and_device():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        audio = torch.randn(2, 4, 10, device=device, requires_grad=True)
        out, _ = apply_acs(audio, None, 1)
        out.sum().backward()
        expected = torch.tensor(
            [1.0, 1.0, -1.0, -1.0], device=device
        )  # X feeds Y' negated, Z' negated, Y feeds X'
        assert out.device == audio.device
        torch.testing.assert_close(audio.grad[0, :, 0], expected)


@pytest.mark.parametrize("entries", [4, 5])
def test_transform_adpit_targets(entries):
    targets = torch.randn(2, 5, 6, entries, 13)
    for index in range(8):
        out = transform_adpit_targets(targets, index)
        assert torch.equal(out[..., 0, :], targets[..., 0, :])
        if entries == 5:
            assert torch.equal(out[..., 4, :], targets[..., 4, :])
        xyz = transform_xyz(targets[..., 1:4, :].movedim(-2, -1), index).movedim(-1, -2)
        assert torch.equal(out[..., 1:4, :], xyz)
    with pytest.raises(ValueError):
        transform_adpit_targets(torch.randn(5, 6, 3, 13), 0)


# --------------------------------------------------------------------------------- RandomACS


def plane_wave_batch(noise, n: int, fmt: str, seed: int = 3):
    """Audio [n, 4, T] and ADPIT targets [n, 2, 6, 5, 3], one source per sample in slot 0 of class 1."""
    az, el = random_directions(n, seed=seed)
    if fmt == "foa":
        audio = torch.stack([foa_encode(noise[:480], float(a), float(e)) for a, e in zip(az, el)])
    else:
        audio = torch.stack([mic_plane_wave(noise[:480], float(a), float(e), SR) for a, e in zip(az, el)])
    targets = torch.zeros(n, 2, 6, 5, 3, dtype=torch.float64)
    targets[:, :, 0, 0, 1] = 1.0
    targets[:, :, 0, 1:4, 1] = polar_to_cartesian(az, el)[:, None, :]
    targets[:, :, 0, 4, 1] = 2.5
    return audio, targets


def recover_row(before, after, fn) -> list[int]:
    return [k for k in range(8) if torch.allclose(fn(before, k), after)]


@pytest.mark.parametrize("fmt", ["foa", "mic"])
def test_random_acs_per_sample_consistency(noise, fmt):
    audio, targets = plane_wave_batch(noise, 32, fmt)
    aug = RandomACS(fmt=fmt, generator=torch.Generator().manual_seed(0))
    out_audio, out_targets = aug(audio, targets)
    rows = []
    for b in range(len(audio)):
        from_audio = recover_row(audio[b], out_audio[b], lambda x, k: apply_acs(x, None, k, fmt=fmt)[0])
        from_targets = recover_row(targets[b], out_targets[b], transform_adpit_targets)
        assert len(from_audio) == 1 and from_audio == from_targets
        rows.append(from_audio[0])
    assert len(set(rows)) >= 5
    # the recovered audio row really is the row that moved the label (physics, not bookkeeping)
    if fmt == "foa":
        az_hat, el_hat = intensity_direction(out_audio)
        az_lab, el_lab = cartesian_to_polar(out_targets[:, 0, 0, 1:4, 1])
        assert float(angle_diff(az_hat, az_lab).max()) < 0.01 and float((el_hat - el_lab).abs().max()) < 0.01


def test_random_acs_probability_generator_and_eval(noise):
    n = 16000
    counts = torch.bincount(
        RandomACS(generator=torch.Generator().manual_seed(0)).sample_index(n), minlength=8
    )
    assert torch.allclose(counts / n, torch.full((8,), 1 / 8), atol=0.015)
    half = RandomACS(p=0.5, generator=torch.Generator().manual_seed(0)).sample_index(n)
    assert abs(float((half == 0).double().mean()) - (0.5 + 0.5 / 8)) < 0.015

    audio, targets = plane_wave_batch(noise, 8, "foa")
    assert RandomACS(p=0.0)(audio, targets)[0] is audio
    aug = RandomACS(generator=torch.Generator().manual_seed(5)).eval()
    assert aug(audio, targets)[1] is targets
    a1, t1 = RandomACS(generator=torch.Generator().manual_seed(7))(audio, targets)
    a2, t2 = RandomACS(generator=torch.Generator().manual_seed(7))(audio, targets)
    assert torch.equal(a1, a2) and torch.equal(t1, t2)
    out, none = RandomACS(generator=torch.Generator().manual_seed(7))(audio, None)
    assert none is None and torch.equal(out, a1)
    with pytest.raises(ValueError):
        RandomACS(p=1.5)


# ------------------------------------------------------------------------------- 8x dataset


@pytest.mark.parametrize("fmt", ["foa", "mic"])
def test_acs_expanded_dataset(fmt):
    base = [
        {"audio": torch.randn(4, 20), "target": torch.randn(3, 6, 4, 13), "name": f"clip{i}"}
        for i in range(3)
    ]
    originals = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in item.items()} for item in base]
    ds = ACSExpandedDataset(base, fmt=fmt)
    assert len(ds) == 24
    for i in range(len(ds)):
        item, src, row = ds[i], originals[i // 8], i % 8
        assert item["name"] == src["name"]
        assert torch.equal(item["audio"], apply_acs(src["audio"], None, row, fmt=fmt)[0])
        assert torch.equal(item["target"], transform_adpit_targets(src["target"], row))
    assert torch.equal(ds[-1]["audio"], ds[23]["audio"])
    assert all(torch.equal(b["audio"], o["audio"]) for b, o in zip(base, originals))  # base untouched
    with pytest.raises(IndexError):
        ds[24]


def test_identity_row_is_exact():
    x = torch.randn(3, 4, 11)
    assert torch.equal(apply_acs(x, None, 0)[0], x) and torch.equal(apply_acs(x, None, 0, fmt="mic")[0], x)
    assert math.isclose(float(transform_polar(179.5, 10.0, 6)[0]), -0.5)
