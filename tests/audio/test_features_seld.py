"""SELD front ends (FOA log-mel + IV, MIC log-mel + GCC-PHAT), the standardiser and LogMel: batching
and chunking, plane-wave geometry, silence, shapes, the standardiser against numpy and LogMel against
librosa. Agreement with the DCASE baseline's own feature code: tests/reference/seld_features."""

import librosa
import numpy as np
import pytest
import torch

from sed.audio.ambisonics import (
    SPEED_OF_SOUND,
    cartesian_to_polar,
    foa_encode,
    mic_capsule_vectors,
    mic_plane_wave,
    polar_to_cartesian,
)
from sed.audio.features import LogMel, build_frontend
from sed.audio.spatial import FeatureStandardizer, FOALogMelIV, MicLogMelGCC

SR = 24000
HOP = 480


def seld_audio(seconds: float, seed: int, num_channels: int = 4) -> np.ndarray:
    """Random-ish ``[samples, 4]`` float32 audio on the int16 grid (what the baseline reads):
    correlated coloured noise with channel-dependent gains and delays, a tone and a quiet gap
    (so top_db clipping happens)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    src = rng.standard_normal(n + 64)
    src = np.convolve(src, rng.standard_normal(16) / 4, mode="same")
    t = np.arange(n) / SR
    out = np.empty((n, num_channels))
    for c in range(num_channels):
        d = int(rng.integers(0, 32))
        out[:, c] = 0.2 * (c + 1) / num_channels * src[d : d + n] + 0.05 * rng.standard_normal(n)
        out[:, c] += 0.1 * np.sin(2 * np.pi * (300 + 200 * c) * t)
    out[n // 3 : n // 3 + SR // 5] *= 1e-2
    out = np.round(out * 32768) / 32768
    return np.clip(out, -1, 1).astype(np.float32)


def as_batch(audio: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(audio.T))[None]


# ------------------------------------------------------------------ batching


@pytest.mark.parametrize("cls", [FOALogMelIV, MicLogMelGCC])
def test_batched_equals_per_file_and_chunking_does_not_matter(cls):
    files = [seld_audio(2.0, 10 + i) for i in range(3)]
    files[1] *= 0.01  # a quiet file: top_db floor is per file and channel
    batch = torch.stack([as_batch(a)[0] for a in files])
    single = cls()
    per_file = torch.cat([single(as_batch(a)) for a in files])
    for chunk in (1, 7, 256, 10**6):  # 10**6: one chunk, as on an accelerator
        out = cls(chunk_frames=chunk)(batch)
        assert out.shape == (3, cls.num_output_channels, 100, 64)
        assert (out - per_file).abs().max() < 1e-4, chunk
    # several short clips per chunk
    clips = torch.stack([as_batch(seld_audio(0.3, 20 + i))[0] for i in range(5)])
    out = cls(chunk_frames=40)(clips)
    ref = torch.cat([single(c[None]) for c in clips])
    assert (out - ref).abs().max() < 1e-4


# ------------------------------------------------------------------ plane-wave geometry


@pytest.mark.parametrize(
    "az, el",
    [(30.0, 20.0), (-120.0, -45.0), (179.0, 10.0), (-179.5, -30.0), (90.0, 0.0), (0.0, -70.0), (-60.0, 60.0)],
)
def test_foa_intensity_vector_points_to_the_source(az, el):
    g = torch.Generator().manual_seed(int(az * 10 + el))
    noise = 0.3 * torch.randn(SR, generator=g)
    foa = foa_encode(noise, az, el)
    feats = FOALogMelIV()(foa[None])[0]
    iv_y, iv_z, iv_x = feats[4:7].sum(dim=(1, 2)).double()
    est_az, est_el = cartesian_to_polar(torch.stack([iv_x, iv_y, iv_z]))
    u_true = polar_to_cartesian(torch.tensor(az), torch.tensor(el))
    u_est = polar_to_cartesian(est_az, est_el)
    angle = torch.rad2deg(torch.arccos(torch.clamp(u_true @ u_est, -1, 1)))
    assert angle < 2.0, (az, el, float(est_az), float(est_el))
    assert abs((float(est_az) - az + 180) % 360 - 180) < 2.0 / max(np.cos(np.radians(el)), 0.2)


@pytest.mark.parametrize("az, el", [(0.0, 0.0), (90.0, 30.0), (-135.0, -20.0), (170.0, 45.0)])
def test_gcc_phat_peak_matches_geometric_delay(az, el):
    g = torch.Generator().manual_seed(7)
    noise = 0.3 * torch.randn(SR, generator=g)
    mic = mic_plane_wave(noise, az, el, SR)
    gcc = MicLogMelGCC()(mic[None])[0, 4:].mean(dim=1)  # [6, 64]
    lags = torch.arange(-32, 32)
    advance = mic_capsule_vectors() @ polar_to_cartesian(torch.tensor(az), torch.tensor(el)) / SPEED_OF_SOUND
    for p, (m, n) in enumerate(MicLogMelGCC.pairs):
        # capsule i hears s(t + advance_i): R = conj(S_m) S_n has phase 2 pi f (a_n - a_m), whose
        # inverse transform peaks at lag -(a_n - a_m) * fs
        expected = -float(advance[n] - advance[m]) * SR
        peak = int(lags[gcc[p].argmax()])
        assert abs(peak - expected) <= 1.0, (m, n, peak, expected)
        if abs(expected) >= 1.0:
            assert np.sign(peak) == np.sign(expected)


def test_gcc_phat_is_scale_invariant_and_handles_silence():
    audio = as_batch(seld_audio(1.0, 5))
    front = MicLogMelGCC(dc_offset=0.0)  # the baseline's 1e-8 offset would swamp a 1e-12 signal
    loud = front(audio)[:, 4:]
    tiny = front(audio * 1e-12)[:, 4:]  # |R|^2 underflows float32: the exact-angle path
    assert torch.isfinite(tiny).all()
    assert (loud - tiny).abs().max() < 1e-4
    silent = audio.clone()
    silent[:, 2] = 0.0  # pairs with capsule 3 see R = 0: angle 0, i.e. a unit impulse at lag 0
    gcc = front(silent)[0, 4:]
    assert torch.isfinite(gcc).all() and torch.isfinite(MicLogMelGCC()(silent)).all()
    for p, (m, n) in enumerate(MicLogMelGCC.pairs):
        if 2 in (m, n):
            expected = torch.zeros(64)
            expected[32] = 1.0
            assert (gcc[p] - expected).abs().max() < 1e-5


# ------------------------------------------------------------------ shapes and errors


def test_shape_contracts_and_bad_input():
    wave = torch.randn(2, 4, SR + 479) * 0.1
    foa, mic = FOALogMelIV(), MicLogMelGCC()
    assert foa(wave).shape == (2, 7, SR // HOP, 64)
    assert mic(wave).shape == (2, 10, SR // HOP, 64)
    assert foa(wave[0]).shape == (1, 7, 50, 64)  # [4, T]: a batch of one
    assert foa(torch.zeros(1, 4, 100)).shape == (1, 7, 0, 64)
    assert foa.num_frames(SR * 60) == 3000
    for bad in (torch.zeros(2, 3, SR), torch.zeros(1, 5, SR), torch.zeros(SR), torch.zeros(1, 1, 4, SR)):
        with pytest.raises(ValueError):
            foa(bad)
        with pytest.raises(ValueError):
            mic(bad)
    assert build_frontend("foa").config()["n_mels"] == 64
    assert isinstance(build_frontend("mic"), MicLogMelGCC)


# ------------------------------------------------------------------ standardiser


def _feats(rng, b, t, offset):
    x = rng.normal(offset, 7.0, size=(b, 3, t, 5)).astype(np.float32)
    x[:, 1, :, 2] = 0.3  # a constant bin (not exactly representable: rounding must not count)
    return x


def test_standardizer_fit_equals_numpy():
    rng = np.random.default_rng(0)
    parts = [_feats(rng, 2, 40, -50.0), _feats(rng, 1, 13, -45.0), _feats(rng, 3, 7, -60.0)]
    cat = np.concatenate([p.transpose(1, 0, 2, 3).reshape(3, -1, 5) for p in parts], axis=1).astype(
        np.float64
    )
    mean, std = cat.mean(axis=1), cat.std(axis=1)
    st = FeatureStandardizer(3, 5).fit(torch.from_numpy(p) for p in parts)
    assert st.fitted and float(st.count) == cat.shape[1]
    np.testing.assert_allclose(st.mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    std[1, 2] = 1.0  # zero variance -> scale 1
    np.testing.assert_allclose(st.scale.numpy(), std, rtol=1e-5, atol=1e-5)
    assert float(st.scale[1, 2]) == 1.0

    pieces = FeatureStandardizer(3, 5)
    for p in parts:
        for i in range(p.shape[0]):
            pieces.partial_fit(torch.from_numpy(p[i]))  # [C, T, bins] pieces
    torch.testing.assert_close(pieces.mean, st.mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pieces.scale, st.scale, rtol=1e-6, atol=1e-6)

    out = st(torch.from_numpy(parts[0])).double().numpy()
    np.testing.assert_allclose(
        out, (parts[0] - mean[None, :, None]) / std[None, :, None], rtol=1e-4, atol=1e-4
    )
    allout = np.concatenate(
        [st(torch.from_numpy(p)).numpy().transpose(1, 0, 2, 3).reshape(3, -1, 5) for p in parts], 1
    )
    keep = np.ones((3, 5), bool)
    keep[1, 2] = False
    np.testing.assert_allclose(allout.mean(1)[keep], 0.0, atol=1e-4)
    np.testing.assert_allclose(allout.std(1)[keep], 1.0, atol=1e-4)
    np.testing.assert_allclose(allout[1, :, 2], 0.0, atol=1e-5)


def test_standardizer_state_dict_round_trip():
    rng = np.random.default_rng(1)
    a, b = torch.from_numpy(_feats(rng, 2, 20, 3.0)), torch.from_numpy(_feats(rng, 1, 9, -3.0))
    st = FeatureStandardizer(3, 5).fit([a])
    clone = FeatureStandardizer(3, 5)
    clone.load_state_dict(st.state_dict())
    assert clone.fitted
    torch.testing.assert_close(clone(b), st(b))
    clone.partial_fit(b)  # continuing after a reload equals continuing in place
    st.partial_fit(b)
    torch.testing.assert_close(clone.mean, st.mean)
    torch.testing.assert_close(clone.scale, st.scale)
    with pytest.raises(ValueError):
        st.partial_fit(torch.zeros(2, 4, 10, 5))
    # float64 features: a constant 0.1 leaves rounding residue in the variance; still scale 1
    const = torch.full((3, 1, 1001, 1), 0.1, dtype=torch.float64)
    st1 = FeatureStandardizer(1, 1).fit([const[0], const[1:]])
    assert float(st1.m2) > 0 and float(st1.scale) == 1.0
    assert torch.allclose(st1(const), torch.zeros(()).double(), atol=1e-6)
    st.reset()
    assert not st.fitted and torch.equal(st(b), b)


# ------------------------------------------------------------------ LogMel


def _librosa_logmel(y, p):
    kw = {k: p[k] for k in ("n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax") if k in p}
    s = librosa.feature.melspectrogram(
        y=y,
        sr=p["sample_rate"],
        window="hann",
        center=p.get("center", True),
        pad_mode="constant",
        power=2.0,
        **kw,
    )
    return librosa.power_to_db(s, top_db=p.get("top_db", 80.0)).T


@pytest.mark.parametrize(
    "params",
    [
        {"sample_rate": 16000, "n_fft": 1024, "hop_length": 320, "n_mels": 64},
        {
            "sample_rate": 22050,
            "n_fft": 2048,
            "hop_length": 256,
            "win_length": 1500,
            "n_mels": 96,
            "fmin": 50.0,
            "fmax": 8000.0,
            "top_db": None,
        },
        {
            "sample_rate": 16000,
            "n_fft": 512,
            "hop_length": 160,
            "win_length": 400,
            "n_mels": 40,
            "fmin": 20.0,
            "top_db": 60.0,
            "center": False,
        },
    ],
)
def test_logmel_matches_librosa(params):
    rng = np.random.default_rng(4)
    sr = params["sample_rate"]
    t = np.arange(int(1.3 * sr)) / sr
    waves = np.stack(
        [
            (0.3 * np.sin(2 * np.pi * (220 + 80 * i) * t) + 0.05 * (i + 1) * rng.standard_normal(len(t)))
            for i in range(6)
        ]
    ).astype(np.float32)
    waves[1, : len(t) // 2] *= 1e-3
    front = LogMel(**params)
    ref = np.stack([_librosa_logmel(w, params) for w in waves])
    out = front(torch.from_numpy(waves)).numpy()  # [B, T]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-3
    out3 = front(torch.from_numpy(waves).reshape(2, 3, -1)).numpy()  # [B, C, T], top_db per channel
    assert out3.shape == (2, 3) + ref.shape[1:]
    assert np.abs(out3.reshape(ref.shape) - ref).max() < 1e-3
    assert front(torch.from_numpy(waves[0])).shape == (1,) + ref.shape[1:]
    with pytest.raises(ValueError):
        front(torch.zeros(1, 1, 1, 16000))
