"""Patch-Mix contrastive loss, projector and mixed CE (spec ast-patchmix-icbhi.md §2.4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sed.losses.patchmix_contrastive import PatchMixContrastiveLoss, Projector, mixed_ce


def _direct(mixed, clean, lam, index, tau):
    """L = -(1/B) sum_i [lam log softmax_j(s_ij)[i] + (1-lam) log softmax_j(s_ij)[index(i)]], by loops."""
    b = mixed.shape[0]
    zm = [[c / math.sqrt(sum(c * c for c in v)) for c in v] for v in mixed.tolist()]
    zc = [[c / math.sqrt(sum(c * c for c in v)) for c in v] for v in clean.tolist()]
    total = 0.0
    for i in range(b):
        s = [sum(p * q for p, q in zip(zm[i], zc[j])) / tau for j in range(b)]
        log_den = math.log(sum(math.exp(v) for v in s))
        total += lam * (s[i] - log_den) + (1 - lam) * (s[int(index[i])] - log_den)
    return -total / b


@pytest.mark.parametrize("lam", [1.0, 0.75, 0.3, 0.0])
@pytest.mark.parametrize("index", [[0, 1, 2, 3, 4], [1, 2, 3, 4, 0], [3, 1, 4, 0, 2]])
@pytest.mark.parametrize("tau", [0.06, 0.5])
def test_equals_direct_formula(lam, index, tau):
    g = torch.Generator().manual_seed(len(index) + int(10 * lam))
    mixed, clean = (
        torch.randn(5, 7, generator=g, dtype=torch.float64),
        torch.randn(5, 7, generator=g, dtype=torch.float64),
    )
    loss = PatchMixContrastiveLoss(temperature=tau)(mixed, clean, lam, torch.tensor(index))
    assert loss.item() == pytest.approx(_direct(mixed, clean, lam, index, tau), rel=1e-5, abs=1e-6)


def test_scale_invariant_and_stable():
    mixed, clean = torch.randn(4, 6), torch.randn(4, 6)
    idx = torch.tensor([2, 3, 0, 1])
    crit = PatchMixContrastiveLoss()
    a = crit(mixed, clean, 0.6, idx)
    torch.testing.assert_close(crit(1e3 * mixed, 1e-2 * clean, 0.6, idx), a)
    aligned = crit(clean, clean, 1.0, torch.arange(4))  # tau 0.06: large logits, no overflow
    assert torch.isfinite(aligned) and aligned < a


def test_gradient_only_to_the_mixed_branch():
    proj = Projector(in_dim=8, proj_dim=6)
    assert [type(m) for m in proj] == [torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.ReLU, torch.nn.Linear]
    assert proj[0].weight.shape == (8, 8) and proj[3].weight.shape == (6, 8)
    assert Projector()[3].weight.shape == (768, 768)
    features = torch.randn(4, 6, requires_grad=True)  # clean features (the target, not projected)
    tokens = torch.randn(4, 8, requires_grad=True)  # mixed pooled features
    loss = PatchMixContrastiveLoss()(proj(tokens), features.detach(), 0.4, torch.tensor([1, 0, 3, 2]))
    loss.backward()
    assert features.grad is None
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    assert all(p.grad is not None for p in proj.parameters())


def test_diff_label_negatives():
    mixed, clean = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    idx, labels = torch.tensor([1, 0, 3, 2]), torch.tensor([0, 0, 1, 2])
    lam, tau = 0.7, 0.1
    got = PatchMixContrastiveLoss(tau, negative_pair="diff_label")(mixed, clean, lam, idx, labels)
    s = F.normalize(mixed, dim=1) @ F.normalize(clean, dim=1).T / tau
    want = 0.0
    for i in range(4):
        keep = [j for j in range(4) if labels[j] != labels[i] or j in (i, int(idx[i]))]
        den = torch.logsumexp(s[i, keep], 0)
        want += lam * (s[i, i] - den) + (1 - lam) * (s[i, idx[i]] - den)
    assert got.item() == pytest.approx(-want.item() / 4, rel=1e-9)
    with pytest.raises(ValueError):
        PatchMixContrastiveLoss(negative_pair="diff_label")(mixed, clean, lam, idx)


def test_mixed_ce():
    logits = torch.randn(6, 4)
    y_a, y_b = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([3, 3, 0, 1, 2, 2])
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])
    for lam in (0.0, 0.35, 1.0):
        want = lam * F.cross_entropy(logits, y_a, weight=w) + (1 - lam) * F.cross_entropy(
            logits, y_b, weight=w
        )
        torch.testing.assert_close(mixed_ce(logits, y_a, y_b, lam, weight=w), want)
    torch.testing.assert_close(mixed_ce(logits, y_a, y_b, 1.0), F.cross_entropy(logits, y_a))
