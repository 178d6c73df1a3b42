"""Linear probes against closed forms (no scikit-learn)."""

import math

import numpy as np
import pytest
import torch

from sed.models.linear_probe import fit_logistic, fit_ridge


def _solve(l2: float) -> float:
    """v with l2 * v * (1 + e^{2v}) = 1: the optimum of the symmetric two-point problem below (bisection)."""
    lo, hi = 0.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if l2 * mid * (1 + math.exp(2 * mid)) < 1 else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("l2", [0.1, 0.01])
def test_logistic_probe_equals_the_closed_form_on_separable_points(l2):
    # x = +1 (class 1), x = -1 (class 0): by symmetry bias 0 and weights (-v, v), where
    # d/dv [log(1 + e^{-2v}) + l2 v^2] = 0  <=>  l2 v (1 + e^{2v}) = 1
    x, y = torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 0])
    w, b = fit_logistic(x, y, 2, l2=l2, steps=500, tolerance=1e-12)
    v = _solve(l2)
    assert w[:, 0].tolist() == pytest.approx([-v, v], abs=1e-5)
    assert b.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_logistic_probe_separates_and_its_gradient_vanishes():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 8, generator=g) * 4
    y = torch.arange(4).repeat_interleave(10)
    x = centers[y] + torch.randn(40, 8, generator=g) * 0.3
    w, b = fit_logistic(x, y, 4, l2=1e-2)
    assert ((x @ w.T + b).argmax(-1) == y).all()
    wd, bd = w.double().requires_grad_(), b.double().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x.double() @ wd.T + bd, y) + 0.5e-2 * (wd**2).sum()
    loss.backward()
    assert wd.grad.abs().max() < 1e-5 and bd.grad.abs().max() < 1e-5
    again = fit_logistic(x, y, 4, l2=1e-2)
    assert torch.equal(again[0], w) and torch.equal(again[1], b)  # deterministic


def test_ridge_probe_equals_the_normal_equations():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.integers(0, 3, 30)
    w, b = fit_ridge(torch.tensor(x), torch.tensor(y), 3, l2=0.1)
    xb = np.hstack([x, np.ones((30, 1))])
    reg = np.diag([0.1 * 30] * 5 + [0.0])
    sol = np.linalg.solve(xb.T @ xb + reg, xb.T @ np.eye(3)[y])
    assert np.allclose(w.numpy(), sol[:-1].T, atol=1e-5) and np.allclose(b.numpy(), sol[-1], atol=1e-5)


def test_multi_label_logistic_and_bad_input():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    y = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]]).float()
    w, b = fit_logistic(x, y, 2, l2=1e-3, multi_label=True)
    assert ((x @ w.T + b >= 0).float() == y).all()
    with pytest.raises(ValueError, match="0 or 1"):
        fit_logistic(x, y * 2, 2, multi_label=True)
    with pytest.raises(ValueError, match="NaN"):
        fit_logistic(torch.tensor([[float("nan")]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1"):
        fit_ridge(x, torch.tensor([0, 1, 2, 0]), 2)
