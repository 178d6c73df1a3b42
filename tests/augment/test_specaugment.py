"""SpecAugment (sed.augment.specaugment): band shape and width, fill value, iid masks, modes."""

from __future__ import annotations

import pytest
import torch

from sed.audio.features import KaldiFbank
from sed.augment.specaugment import SpecAugment

B, T, F = 64, 100, 40
FILL = 3.5  # not a value of the random input


def _bands(masked: torch.Tensor, dim: int) -> list[list[int]]:
    """Per example, the indices along ``dim`` (1 time, 2 frequency) masked over the whole other axis."""
    full = masked.all(dim=3 - dim)  # [B, T] for time, [B, F] for frequency
    return [torch.nonzero(row).flatten().tolist() for row in full]


def _apply(aug: SpecAugment, x: torch.Tensor) -> torch.Tensor:
    return aug.train()(x)


def test_frequency_masks_are_contiguous_bands_within_the_width():
    x = torch.randn(B, T, F)
    out = _apply(SpecAugment(freqm=12, mask_value=FILL), x)
    masked = out == FILL
    assert torch.equal(out[~masked], x[~masked])  # everything else untouched
    bands = _bands(masked, 2)
    for b, band in enumerate(bands):
        assert masked[b].sum() == len(band) * T  # whole columns only
        assert len(band) < 12
        if band:
            assert band == list(range(band[0], band[0] + len(band)))  # contiguous
    assert len({tuple(band) for band in bands}) > 10  # iid: the examples differ


def test_time_masks_are_contiguous_bands_within_the_width():
    x = torch.randn(B, T, F)
    out = _apply(SpecAugment(timem=30, mask_value=FILL), x)
    masked = out == FILL
    bands = _bands(masked, 1)
    for b, band in enumerate(bands):
        assert masked[b].sum() == len(band) * F
        assert len(band) < 30
        if band:
            assert band == list(range(band[0], band[0] + len(band)))
    assert len({tuple(band) for band in bands}) > 10


def test_widths_cover_zero_to_width_minus_one():
    # torchaudio draws the width uniformly on 0 .. freqm - 1
    out = _apply(SpecAugment(freqm=4, mask_value=FILL), torch.zeros(2000, 8, 16))
    widths = torch.tensor([len(b) for b in _bands(out == FILL, 2)])
    counts = torch.bincount(widths, minlength=5)
    assert counts[4] == 0 and (counts[:4] > 400).all(), counts


def test_several_masks_and_both_axes():
    x = torch.randn(B, T, F)
    out = _apply(SpecAugment(freqm=6, timem=10, num_freq_masks=2, num_time_masks=3, mask_value=FILL), x)
    masked = out == FILL
    freq, time = _bands(masked, 2), _bands(masked, 1)
    for b in range(B):
        expect = torch.zeros(T, F, dtype=torch.bool)
        expect[:, freq[b]] = True
        expect[time[b], :] = True
        assert torch.equal(masked[b], expect)  # the union of row and column bands, nothing else
        assert len(freq[b]) <= 2 * 5 and len(time[b]) <= 3 * 9


def test_mask_value_is_the_front_ends_image_of_zero():
    fe = KaldiFbank(num_mel_bins=F, target_length=T)
    feats = fe(0.1 * torch.randn(4, 16000))
    out = _apply(SpecAugment(freqm=20, timem=40, mask_value=fe.mask_value), feats)
    changed = out != feats
    assert changed.any()
    assert torch.all(out[changed] == torch.tensor(fe.mask_value))
    assert fe.mask_value == pytest.approx((0 - fe.mean) / (2 * fe.std))


def test_shared_masks_without_iid():
    out = _apply(SpecAugment(freqm=12, timem=30, mask_value=FILL, iid=False), torch.randn(16, T, F))
    masked = out == FILL
    assert all(torch.equal(masked[0], m) for m in masked)


def test_eval_mode_and_zero_widths_are_identity():
    x = torch.randn(4, T, F)
    aug = SpecAugment(freqm=12, timem=30, mask_value=FILL)
    assert aug.eval()(x) is x
    assert torch.equal(_apply(SpecAugment(0, 0, mask_value=FILL), x), x)
    assert torch.equal(_apply(SpecAugment(5, 5, num_freq_masks=0, num_time_masks=0, mask_value=FILL), x), x)


def test_single_example_dtype_and_gradient():
    x = torch.randn(T, F, dtype=torch.float64, requires_grad=True)
    out = _apply(SpecAugment(freqm=10, timem=10, mask_value=FILL), x)
    assert out.shape == (T, F) and out.dtype == torch.float64
    out.sum().backward()
    assert torch.equal(x.grad, (out != FILL).double())  # gradient flows through the unmasked cells


def test_bad_arguments():
    with pytest.raises(ValueError, match="freqm"):
        SpecAugment(freqm=-1)
    with pytest.raises(ValueError, match="num_time_masks"):
        SpecAugment(num_time_masks=1.5)
    with pytest.raises(ValueError, match="frames, bins"):
        SpecAugment(4, 4).train()(torch.zeros(10))
