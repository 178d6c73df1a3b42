"""Feature-domain ACS: transforming cached features equals featurising the transformed audio."""

from __future__ import annotations

import pytest
import torch

from sed.audio.ambisonics import foa_encode, mic_plane_wave
from sed.audio.spatial import FOALogMelIV, MicLogMelGCC
from sed.augment.acs import ACS_TRANSFORMS, apply_acs, apply_acs_features, apply_foa_rotation

SR = 24000
PAIRS = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def _scene(fmt: str, seed: int = 0) -> torch.Tensor:
    """``[2, 4, 0.6 s]``: two plane waves from different directions plus a little diffuse noise."""
    g = torch.Generator().manual_seed(seed)
    n = int(0.6 * SR)
    clips = []
    for dirs in (((30.0, 20.0), (-120.0, -40.0)), ((100.0, 60.0), (-10.0, 5.0))):
        x = 0.01 * torch.randn(4, n, generator=g, dtype=torch.float64)
        for az, el in dirs:
            s = 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
            x = x + (foa_encode(s, az, el) if fmt == "foa" else mic_plane_wave(s, az, el, SR))
        clips.append(x)
    return torch.stack(clips).float()


@pytest.fixture(scope="module")
def foa_audio():
    return _scene("foa")


@pytest.fixture(scope="module")
def mic_audio():
    return _scene("mic", seed=1)


@pytest.mark.parametrize("dc_offset", [0.0, 1e-8])
def test_foa_features_commute_with_acs(foa_audio, dc_offset):
    fe = FOALogMelIV(dc_offset=dc_offset)
    feats = fe(foa_audio)
    for k in range(len(ACS_TRANSFORMS)):
        expected = fe(apply_acs(foa_audio, None, k)[0])
        got = apply_acs_features(feats, k, "foa")
        torch.testing.assert_close(got[:, :4], expected[:, :4], atol=1e-4, rtol=0)  # dB
        torch.testing.assert_close(got[:, 4:], expected[:, 4:], atol=1e-5, rtol=1e-5)  # IV
        if k:  # the transform really moves something (so the check above can fail)
            assert not torch.allclose(feats, expected, atol=1e-3)


def test_foa_mazzon_rotations_in_feature_domain(foa_audio):
    fe = FOALogMelIV(dc_offset=0.0)
    feats = fe(foa_audio)
    for k in range(16):
        expected = fe(apply_foa_rotation(foa_audio, None, k)[0])
        torch.testing.assert_close(
            apply_acs_features(feats, k, "foa", table="mazzon16"), expected, atol=1e-4, rtol=1e-5
        )


def test_mic_features_commute_with_acs_except_the_edge_lag(mic_audio):
    fe = MicLogMelGCC()
    feats = fe(mic_audio)
    flipped_rows = 0
    for k, t in enumerate(ACS_TRANSFORMS):
        expected = fe(apply_acs(mic_audio, None, k, fmt="mic")[0])
        got = apply_acs_features(feats, k, "mic")
        torch.testing.assert_close(got[:, :4], expected[:, :4], atol=1e-4, rtol=0)
        p = t.mic_src
        for c, (i, j) in enumerate(PAIRS, start=4):
            a, b = p[i], p[j]
            if a < b:  # same pair order: the whole lag axis matches
                torch.testing.assert_close(got[:, c], expected[:, c], atol=1e-5, rtol=0)
            else:  # reversed lags; bin 0 (lag -32) keeps the old pair's lag -32 value
                flipped_rows += 1
                torch.testing.assert_close(got[:, c, :, 1:], expected[:, c, :, 1:], atol=1e-5, rtol=0)
                old = 4 + PAIRS.index((b, a))
                torch.testing.assert_close(got[:, c, :, 0], feats[:, old, :, 0])
                # without the lag reversal the channel would be wrong
                assert not torch.allclose(feats[:, old, :, 1:], expected[:, c, :, 1:], atol=1e-2)
    assert flipped_rows > 0


def test_per_sample_index_and_leading_dims(foa_audio, mic_audio):
    for fmt, audio, fe in (("foa", foa_audio, FOALogMelIV()), ("mic", mic_audio, MicLogMelGCC())):
        feats = fe(audio)
        index = torch.tensor([1, 4])
        out = apply_acs_features(feats, index, fmt)
        for b in range(2):
            torch.testing.assert_close(out[b], apply_acs_features(feats[b], int(index[b]), fmt))
        stacked = torch.stack([feats, feats])  # [2, B, C, T, F]: index broadcast over dim 1
        out2 = apply_acs_features(stacked, index, fmt)
        torch.testing.assert_close(out2[1, 0], apply_acs_features(feats[0], 4, fmt))
        torch.testing.assert_close(apply_acs_features(feats, 0, fmt), feats)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"foa features must be \[\.\.\., 7, T, F\]"):
        apply_acs_features(torch.zeros(2, 10, 5, 64), 1, "foa")
    with pytest.raises(ValueError, match="fmt"):
        apply_acs_features(torch.zeros(2, 7, 5, 64), 1, "ambix")
    with pytest.raises(ValueError, match="no MIC channel permutation"):
        apply_acs_features(torch.zeros(2, 10, 5, 64), 1, "mic", table="mazzon16")
    with pytest.raises(IndexError):
        apply_acs_features(torch.zeros(2, 7, 5, 64), 8, "foa")
