"""ADPIT loss (seld.md 4): permutation invariance, a plain brute-force reference, gradients, shapes."""

from __future__ import annotations

import itertools

import pytest
import torch

from sed.data.corpora.dcase_csv import SeldEvent
from sed.data.corpora.starss import adpit_targets
from sed.losses.adpit import ADPITLoss, adpit_loss

C = 4


def reference_adpit(output, target, reduction="mean"):
    """``MSELoss_ADPIT`` written out plainly, one named candidate at a time."""
    b, t, _, n, c = target.shape
    axes = n - 1

    def slot(s):
        return target[:, :, s, 0:1, :] * target[:, :, s, 1:, :]

    a0, b0, b1, c0, c1, c2 = (slot(s) for s in range(6))

    def cat(*xs):
        return torch.cat(xs, dim=2)  # [B, T, 3*axes, C]

    a0a0a0 = cat(a0, a0, a0)
    b0b0b1, b0b1b0, b0b1b1 = cat(b0, b0, b1), cat(b0, b1, b0), cat(b0, b1, b1)
    b1b0b0, b1b0b1, b1b1b0 = cat(b1, b0, b0), cat(b1, b0, b1), cat(b1, b1, b0)
    c0c1c2, c0c2c1, c1c0c2 = cat(c0, c1, c2), cat(c0, c2, c1), cat(c1, c0, c2)
    c1c2c0, c2c0c1, c2c1c0 = cat(c1, c2, c0), cat(c2, c0, c1), cat(c2, c1, c0)
    pad4a = b0b0b1 + c0c1c2
    pad4b = a0a0a0 + c0c1c2
    pad4c = a0a0a0 + b0b0b1
    candidates = [
        a0a0a0 + pad4a,
        b0b0b1 + pad4b,
        b0b1b0 + pad4b,
        b0b1b1 + pad4b,
        b1b0b0 + pad4b,
        b1b0b1 + pad4b,
        b1b1b0 + pad4b,
        c0c1c2 + pad4c,
        c0c2c1 + pad4c,
        c1c0c2 + pad4c,
        c1c2c0 + pad4c,
        c2c0c1 + pad4c,
        c2c1c0 + pad4c,
    ]
    out = output.reshape(b, t, 3 * axes, c)
    losses = torch.stack([((out - cand) ** 2).mean(dim=2) for cand in candidates])  # [13, B, T, C]
    best = losses.min(dim=0).indices
    selected = sum(losses[k] * (best == k) for k in range(13))
    return selected if reduction == "none" else selected.mean()


def events_target(dirs, cls=1, frames=3, with_distance=False, extra=()):
    """ADPIT target ``[1, frames, 6, 4|5, C]`` with same-class events at ``dirs`` in every frame."""
    ev = [
        SeldEvent(f, cls, k, az, el, 100.0 + 50 * k) for f in range(frames) for k, (az, el) in enumerate(dirs)
    ]
    ev += [SeldEvent(f, c, 0, az, el, 150.0) for f in range(frames) for c, az, el in extra]
    return adpit_targets(ev, frames, C, with_distance=with_distance)[None]


def arrangement_output(target, tracks, cls=1, extra_cls=()):
    """Output whose 3 tracks of class ``cls`` hold the slots ``tracks``; ``extra_cls`` single events (A0)
    fill all three tracks of their class. Everything else is 0."""
    b, t, _, n, c = target.shape
    out = torch.zeros(b, t, 3, n - 1, c)
    for k, s in enumerate(tracks):
        out[:, :, k, :, cls] = target[:, :, s, 1:, cls]
    for e in extra_cls:
        out[:, :, :, :, e] = target[:, :, 0, 1:, e][:, :, None]
    return out.reshape(b, t, -1)


@pytest.mark.parametrize("with_distance", [False, True])
def test_two_same_class_events_any_valid_arrangement_is_free(with_distance):
    target = events_target([(30, 10), (-100, -20)], with_distance=with_distance, extra=[(3, 60, 0)])
    assert target[0, 0, 1:3, 0, 1].tolist() == [1.0, 1.0]  # B0, B1 used
    arrangements = [t for t in itertools.product((1, 2), repeat=3) if len(set(t)) == 2]
    assert len(arrangements) == 6
    for tracks in arrangements:
        out = arrangement_output(target, tracks, extra_cls=(3,))
        assert float(adpit_loss(out, target)) == pytest.approx(0.0, abs=1e-12), tracks
    # an arrangement that drops one of the two events is not free
    assert float(adpit_loss(arrangement_output(target, (1, 1, 1), extra_cls=(3,)), target)) > 1e-3


@pytest.mark.parametrize("with_distance", [False, True])
def test_three_same_class_events_every_permutation_is_free(with_distance):
    target = events_target([(30, 10), (-100, -20), (170, 45)], with_distance=with_distance)
    assert target[0, 0, 3:6, 0, 1].tolist() == [1.0, 1.0, 1.0]
    for tracks in itertools.permutations((3, 4, 5)):
        out = arrangement_output(target, tracks)
        assert float(adpit_loss(out, target)) == pytest.approx(0.0, abs=1e-12), tracks
    assert float(adpit_loss(arrangement_output(target, (3, 3, 4)), target)) > 1e-3


def test_single_event_needs_all_three_tracks():
    target = events_target([(45, 0)])
    assert float(adpit_loss(arrangement_output(target, (0, 0, 0)), target)) == pytest.approx(0.0, abs=1e-12)
    out = arrangement_output(target, (0, 0, 0)).reshape(1, 3, 3, 3, C)
    out[:, :, 1:] = 0  # only track 0 says it
    assert float(adpit_loss(out.reshape(1, 3, -1), target)) > 1e-3


@pytest.mark.parametrize("axes", [3, 4])
def test_equals_brute_force_on_random_tensors(axes):
    g = torch.Generator().manual_seed(3)
    b, t, c = 3, 7, 5
    target = torch.randn(b, t, 6, axes + 1, c, generator=g)
    target[:, :, :, 0] = (torch.rand(b, t, 6, c, generator=g) < 0.4).float()
    output = torch.randn(b, t, 3 * axes * c, generator=g)
    torch.testing.assert_close(adpit_loss(output, target), reference_adpit(output, target))
    torch.testing.assert_close(adpit_loss(output, target, "none"), reference_adpit(output, target, "none"))
    torch.testing.assert_close(
        ADPITLoss("sum")(output, target), reference_adpit(output, target, "none").sum()
    )


def test_gradient_is_that_of_the_selected_candidate():
    g = torch.Generator().manual_seed(5)
    target = torch.randn(2, 4, 6, 4, C, generator=g)
    target[:, :, :, 0] = (torch.rand(2, 4, 6, C, generator=g) < 0.5).float()
    out1 = torch.randn(2, 4, 3 * 3 * C, generator=g, requires_grad=True)
    out2 = out1.detach().clone().requires_grad_(True)
    adpit_loss(out1, target).backward()
    reference_adpit(out2, target).backward()
    torch.testing.assert_close(out1.grad, out2.grad)
    assert out1.grad.abs().sum() > 0


def test_shape_errors():
    target = torch.zeros(2, 5, 6, 4, C)
    with pytest.raises(ValueError, match=r"output must be \[B, T, 3\*3\*4\]"):
        adpit_loss(torch.zeros(2, 5, 3 * 4 * C), target)
    with pytest.raises(ValueError, match="ADPIT target must be"):
        adpit_loss(torch.zeros(2, 5, 36), torch.zeros(2, 5, 3, 4, C))
    with pytest.raises(ValueError, match="reduction"):
        ADPITLoss("max")
