import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchaudio.compliance import kaldi

from sed.audio.features import AUDIOSET_MEAN, AUDIOSET_STD, KaldiFbank, build_frontend


def ast_reference(wave_1d, target_length, mean=AUDIOSET_MEAN, std=AUDIOSET_STD):
    """What the AST data loader computes for one clip (spec 1.1)."""
    fb = kaldi.fbank(
        wave_1d[None],
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )
    p = target_length - fb.shape[0]
    fb = F.pad(fb, (0, 0, 0, p)) if p > 0 else fb[:target_length]
    return (fb - mean) / (2 * std)


def speechlike(n, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    x = 0.3 * torch.sin(2 * torch.pi * (200 + 50 * torch.sin(2 * torch.pi * 3 * t)) * t)
    return x + 0.05 * torch.randn(n, generator=g) + 0.01  # with a DC offset


@pytest.mark.parametrize("seconds", [1.0, 3.3, 8.0, 10.0, 12.0])
@pytest.mark.parametrize("target", [128, 798, 1024])
def test_equals_torchaudio_kaldi_plus_ast_normalisation(seconds, target):
    w = speechlike(int(16000 * seconds), 1)
    out = KaldiFbank(target_length=target)(w[None])[0]
    ref = ast_reference(w, target)
    assert out.shape == ref.shape == (target, 128)
    assert (out - ref).abs().max() < 1e-4


def test_batched_with_lengths_equals_per_clip():
    lens = [16000, 40000, 24010]
    clips = [speechlike(n, i) for i, n in enumerate(lens)]
    batch = torch.zeros(3, max(lens))
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c
    fe = KaldiFbank(target_length=300, chunk_frames=64)  # small chunks exercise the chunked path
    out = fe(batch, lengths=torch.tensor(lens))
    for i, c in enumerate(clips):
        assert (out[i] - ast_reference(c, 300)).abs().max() < 1e-4


def test_padded_rows_hold_the_normalised_zero():
    out = KaldiFbank(target_length=200)(speechlike(16000, 0)[None])[0]
    assert out.shape == (200, 128)
    assert torch.allclose(out[99:], torch.full((101, 128), 0.46703), atol=1e-5)  # 98 real frames


def test_crop_keeps_the_head():
    w = speechlike(16000 * 3, 0)
    full = KaldiFbank(target_length=None, normalize=False)(w[None])[0]
    crop = KaldiFbank(target_length=100, normalize=False)(w[None])[0]
    assert full.shape == (298, 128)
    assert torch.equal(crop, full[:100])


def test_input_shapes_and_multichannel_downmix():
    w = speechlike(16000, 0)
    fe = KaldiFbank(target_length=100)
    a = fe(w)
    b = fe(w[None, None])
    stereo = torch.stack([w, w])[None]
    assert a.shape == b.shape == fe(stereo).shape == (1, 100, 128)
    assert torch.allclose(a, fe(stereo), atol=1e-5)
    with pytest.raises(ValueError, match="waveform"):
        fe(torch.zeros(1, 1, 1, 100))


def test_shorter_than_one_frame_gives_padding_only():
    out = KaldiFbank(target_length=10)(torch.zeros(1, 100))
    assert torch.allclose(out, torch.full((1, 10, 128), 0.46703), atol=1e-5)


def test_matches_transformers_ast_feature_extractor():
    transformers = pytest.importorskip("transformers")
    w = speechlike(16000 * 5, 3).numpy()
    fx = transformers.ASTFeatureExtractor(max_length=798)
    ref = fx(w, sampling_rate=16000, return_tensors="np")["input_values"][0]
    out = KaldiFbank(target_length=798)(torch.from_numpy(w)[None])[0].numpy()
    assert np.abs(out - ref).max() < 1e-4


def test_build_frontend_by_name():
    assert isinstance(build_frontend("fbank", target_length=10), KaldiFbank)
    with pytest.raises(ValueError, match="unknown feature kind"):
        build_frontend("mfcc")
