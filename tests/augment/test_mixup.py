"""Waveform mixup (sed.augment.mixup): lam statistics, the mixing identity, targets, lengths, modes."""

from __future__ import annotations

import pytest
import torch

from sed.augment.mixup import Mixup, mixup


def _batch(b: int = 16, t: int = 50, c: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    wave = torch.randn(b, t, generator=g)
    targets = torch.nn.functional.one_hot(torch.randint(0, c, (b,), generator=g), c).float()
    return wave, targets


def test_lam_follows_beta_per_example():
    wave, targets = _batch(b=4000, t=4)
    out = mixup(wave, targets, alpha=10.0, generator=torch.Generator().manual_seed(1))
    lam = out.lam
    assert lam.shape == (4000,) and ((lam > 0) & (lam < 1)).all()
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam.std().item() == pytest.approx((1 / 84) ** 0.5, rel=0.1)  # Beta(10, 10): var = 1 / (4 * 21)
    assert len(set(lam.tolist())) > 3900  # one draw per example, not per batch
    small = mixup(wave, targets, alpha=0.2, generator=torch.Generator().manual_seed(1)).lam
    assert ((small < 0.1) | (small > 0.9)).float().mean() > 0.5  # alpha < 1 pushes lam to the ends


def test_mixed_wave_and_targets_follow_the_reported_partner():
    wave, targets = _batch()
    out = mixup(wave, targets, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out.index.sort().values, torch.arange(16))  # a permutation
    assert out.index.ne(torch.arange(16)).any()
    for i in range(16):
        j, lam = out.index[i], out.lam[i]
        torch.testing.assert_close(out.wave[i], lam * wave[i] + (1 - lam) * wave[j])
        torch.testing.assert_close(out.targets[i], lam * targets[i] + (1 - lam) * targets[j])
    torch.testing.assert_close(out.targets.sum(-1), torch.ones(16))  # one-hot sums are kept
    assert out.wave.shape == wave.shape and out.lengths is None


def test_multi_hot_targets_and_multichannel_waves():
    g = torch.Generator().manual_seed(3)
    wave = torch.randn(8, 4, 30, generator=g)
    targets = (torch.rand(8, 6, generator=g) < 0.4).float()
    out = mixup(wave, targets, generator=g)
    lam = out.lam[:, None]
    torch.testing.assert_close(
        out.targets.sum(-1, keepdim=True),
        lam * targets.sum(-1, keepdim=True) + (1 - lam) * targets[out.index].sum(-1, keepdim=True),
    )
    torch.testing.assert_close(out.wave, lam[:, :, None] * wave + (1 - lam[:, :, None]) * wave[out.index])


def test_prob_zero_is_identity_and_prob_half_mixes_half():
    wave, targets = _batch()
    out = mixup(wave, targets, prob=0.0)
    assert out.wave is wave and out.targets is targets
    assert torch.equal(out.lam, torch.ones(16)) and torch.equal(out.index, torch.arange(16))
    wave, targets = _batch(b=2000, t=4)
    out = mixup(wave, targets, prob=0.5, generator=torch.Generator().manual_seed(4))
    kept = out.lam == 1
    assert kept.float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert torch.equal(out.wave[kept], wave[kept]) and torch.equal(out.targets[kept], targets[kept])


def test_lengths_take_the_longer_clip_and_padding_is_silence():
    wave, targets = _batch(b=6, t=40)
    lengths = torch.tensor([10, 40, 25, 5, 30, 20])
    out = mixup(wave, targets, lengths=lengths, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out.lengths, torch.maximum(lengths, lengths[out.index]))
    clean = wave * (torch.arange(40) < lengths[:, None])  # the junk past each length is dropped
    lam = out.lam[:, None]
    torch.testing.assert_close(out.wave, lam * clean + (1 - lam) * clean[out.index])
    assert (out.wave * (torch.arange(40) >= out.lengths[:, None])).abs().max() == 0


def test_generator_reproduces_and_leaves_global_rng_alone():
    wave, targets = _batch()
    state = torch.get_rng_state()
    a = mixup(wave, targets, prob=0.7, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state)
    b = mixup(wave, targets, prob=0.7, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.wave, b.wave) and torch.equal(a.index, b.index) and torch.equal(a.lam, b.lam)
    c = mixup(wave, targets, prob=0.7, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(a.lam, c.lam)


def test_module_mixes_in_training_only():
    wave, targets = _batch()
    aug = Mixup(alpha=10.0, prob=1.0)
    out = aug.train()(wave, targets)
    assert (out.lam < 1).all() and not torch.equal(out.wave, wave)
    out = aug.eval()(wave, targets)
    assert out.wave is wave and torch.equal(out.lam, torch.ones(16))


def test_bad_arguments():
    wave, targets = _batch()
    with pytest.raises(ValueError, match="float targets"):
        mixup(wave, targets.argmax(-1))
    with pytest.raises(ValueError, match="alpha"):
        mixup(wave, targets, alpha=0.0)
    with pytest.raises(ValueError, match="prob"):
        mixup(wave, targets, prob=1.5)
    with pytest.raises(ValueError, match="lengths"):
        mixup(wave, targets, lengths=torch.tensor([3]))
    with pytest.raises(ValueError, match="alpha > 0"):
        Mixup(alpha=-1)
