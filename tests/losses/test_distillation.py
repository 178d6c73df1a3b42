"""Knowledge distillation losses (Hinton et al. 2015): the formula by hand, the T^2 gradient scale,
the alpha limits, soft targets, the multi-label (Bernoulli) variant and ensemble teachers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sed.losses.distillation import (
    DistillationLoss,
    distillation_loss,
    multilabel_distillation_loss,
    soften,
)

D = torch.float64


def _logits(*shape, scale=2.0):
    return torch.randn(*shape, dtype=D) * scale


def _softmax_list(row, t):
    e = [math.exp(v / t) for v in row]
    z = sum(e)
    return [v / z for v in e]


def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def test_loss_equals_formula_by_hand():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=D)
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.5]], dtype=D)
    y = torch.tensor([1, 2])
    T, a = 2.0, 0.3
    kl = ce = 0.0
    for i in range(2):
        ps = _softmax_list(s[i].tolist(), T)
        pt = _softmax_list(t[i].tolist(), T)
        kl += sum(q * math.log(q / p) for q, p in zip(pt, ps))
        ce += -math.log(_softmax_list(s[i].tolist(), 1.0)[int(y[i])])
    expected = a * T**2 * kl / 2 + (1 - a) * ce / 2
    got = distillation_loss(s, t, y, temperature=T, alpha=a)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # and against PyTorch's own KL (batchmean) and CE
    ref = a * T**2 * F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") + (
        1 - a
    ) * F.cross_entropy(s, y)
    assert torch.allclose(got, ref, rtol=1e-12, atol=0)


def test_reductions_and_terms():
    s, t = _logits(5, 4), _logits(5, 4)
    y = torch.randint(0, 4, (5,))
    per = distillation_loss(s, t, y, temperature=3.0, alpha=0.4, reduction="none")
    assert per.shape == (5,)
    assert torch.allclose(per.mean(), distillation_loss(s, t, y, temperature=3.0, alpha=0.4))
    assert torch.allclose(per.sum(), distillation_loss(s, t, y, temperature=3.0, alpha=0.4, reduction="sum"))
    terms = distillation_loss(s, t, y, temperature=3.0, alpha=0.4, return_terms=True)
    assert torch.allclose(terms.total, 0.4 * terms.kd + 0.6 * terms.ce)
    assert torch.allclose(terms.ce, F.cross_entropy(s, y))


def test_frame_level_inputs_average_over_all_positions():
    s, t = _logits(2, 3, 4), _logits(2, 3, 4)
    y = torch.randint(0, 4, (2, 3))
    got = distillation_loss(s, t, y, temperature=2.0, alpha=0.5)
    flat = distillation_loss(s.reshape(6, 4), t.reshape(6, 4), y.reshape(6), temperature=2.0, alpha=0.5)
    assert torch.allclose(got, flat)
    assert distillation_loss(s, t, y, reduction="none").shape == (2, 3)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_gradient_is_T_times_prob_difference(T):
    """d(T^2 KL(p_t||p_s))/ds = T^2 (p_s - p_t)/T = T (p_s - p_t), divided by N (batchmean)."""
    s = _logits(3, 5).requires_grad_()
    t = _logits(3, 5)
    distillation_loss(s, t, temperature=T, alpha=1.0).backward()
    expected = T * (F.softmax(s.detach() / T, -1) - F.softmax(t / T, -1)) / 3
    assert torch.allclose(s.grad, expected, rtol=1e-10, atol=1e-14)


def test_gradient_norm_ratio_T4_vs_T1():
    s = torch.tensor([[0.3, -0.2, 0.1, 0.0]], dtype=D)
    t = torch.tensor([[0.1, 0.2, -0.3, 0.05]], dtype=D)
    norms = {}
    for T in (1.0, 4.0):
        x = s.clone().requires_grad_()
        distillation_loss(x, t, temperature=T, alpha=1.0).backward()
        norms[T] = x.grad.norm().item()
        analytic = T * (F.softmax(s / T, -1) - F.softmax(t / T, -1))
        assert norms[T] == pytest.approx(analytic.norm().item(), rel=1e-12)
    # for small logits p_s - p_t ~ (s - t)/(T C): the T^2 factor keeps the gradient scale roughly T-free
    assert 0.8 < norms[4.0] / norms[1.0] < 1.2
    # without the T^2 factor it would shrink by ~T^2 = 16
    x = s.clone().requires_grad_()
    F.kl_div(F.log_softmax(x / 4, -1), F.softmax(t / 4, -1), reduction="batchmean").backward()
    assert x.grad.norm().item() == pytest.approx(norms[4.0] / 16, rel=1e-12)


def test_alpha_zero_is_cross_entropy_exactly():
    s, t = _logits(4, 6), _logits(4, 6)
    y = torch.randint(0, 6, (4,))
    assert torch.equal(distillation_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y))
    assert torch.equal(distillation_loss(s, None, y, alpha=0.0), F.cross_entropy(s, y))  # no teacher needed


def test_alpha_one_identical_student_teacher_is_zero():
    s = _logits(4, 6)
    loss = distillation_loss(s, s.clone(), temperature=4.0, alpha=1.0)
    assert abs(loss.item()) < 1e-12
    loss_ml = multilabel_distillation_loss(s, s.clone(), temperature=4.0, alpha=1.0)
    assert abs(loss_ml.item()) < 1e-12
    assert (
        distillation_loss(s, s + 0.5, temperature=4.0, alpha=1.0).item() < 1e-12
    )  # softmax is shift-invariant
    assert distillation_loss(s, -s, temperature=4.0, alpha=1.0).item() > 0.01


def test_soft_targets():
    s, t = _logits(3, 4), _logits(3, 4)
    y = torch.tensor([0, 3, 1])
    onehot = F.one_hot(y, 4).to(D)
    assert torch.allclose(distillation_loss(s, t, onehot), distillation_loss(s, t, y), rtol=1e-12)
    soft = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.25, 0.25]], dtype=D)
    ce = -(soft * F.log_softmax(s, -1)).sum(-1).mean()
    assert torch.allclose(distillation_loss(s, t, soft, alpha=0.0), ce, rtol=1e-12)


def test_multilabel_formula_by_hand_and_gradient():
    s = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=D, requires_grad=True)
    t = torch.tensor([[2.0, -1.0, -0.5], [0.5, 2.0, 1.0]], dtype=D)
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=D)
    T, a = 3.0, 0.6
    kl = bce = 0.0
    for i in range(2):
        for c in range(3):
            p, q = _sigmoid(s[i, c].item() / T), _sigmoid(t[i, c].item() / T)
            kl += q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
            ps = _sigmoid(s[i, c].item())
            bce += -(y[i, c].item() * math.log(ps) + (1 - y[i, c].item()) * math.log(1 - ps))
    expected = a * T**2 * kl / 6 + (1 - a) * bce / 6
    loss = multilabel_distillation_loss(s, t, y, temperature=T, alpha=a)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # BCE(student, teacher soft labels) differs from the KL only by the teacher's entropy (no gradient)
    s.grad = None
    multilabel_distillation_loss(s, t, temperature=T, alpha=1.0).backward()
    expected_grad = T * (torch.sigmoid(s.detach() / T) - torch.sigmoid(t / T)) / 6
    assert torch.allclose(s.grad, expected_grad, rtol=1e-10)
    assert torch.equal(
        multilabel_distillation_loss(s, t, y, alpha=0.0), F.binary_cross_entropy_with_logits(s, y)
    )


def test_multilabel_reduction_none_is_per_element():
    s, t = _logits(3, 5), _logits(3, 5)
    y = (torch.rand(3, 5) > 0.5).to(D)
    per = multilabel_distillation_loss(s, t, y, reduction="none")
    assert per.shape == (3, 5)
    assert torch.allclose(per.mean(), multilabel_distillation_loss(s, t, y))


def test_soften_averages_teacher_probabilities():
    t1, t2 = _logits(2, 3), _logits(2, 3)
    T = 2.0
    avg = soften([t1, t2], T)
    assert torch.allclose(avg, (F.softmax(t1 / T, -1) + F.softmax(t2 / T, -1)) / 2)
    assert torch.allclose(avg.sum(-1), torch.ones(2, dtype=D))
    # the mean of probabilities, not the softmax of the mean logits
    assert not torch.allclose(avg, F.softmax((t1 + t2) / 2 / T, -1))
    ml = soften([t1, t2], T, multi_label=True)
    assert torch.allclose(ml, (torch.sigmoid(t1 / T) + torch.sigmoid(t2 / T)) / 2)
    assert torch.allclose(soften(t1, T), F.softmax(t1 / T, -1))  # one teacher as a bare tensor
    w = soften([t1, t2], T, weights=[3, 1])
    assert torch.allclose(w, 0.75 * F.softmax(t1 / T, -1) + 0.25 * F.softmax(t2 / T, -1))
    assert not soften([t1.requires_grad_(), t2], T).requires_grad


def test_ensemble_teacher_via_probs_equals_list_of_logits():
    s = _logits(4, 5).requires_grad_()
    t1, t2 = _logits(4, 5), _logits(4, 5)
    y = torch.randint(0, 5, (4,))
    T = 4.0
    p = soften([t1, t2], T)
    a = distillation_loss(s, target=y, temperature=T, alpha=0.7, teacher_probs=p)
    b = distillation_loss(s, [t1, t2], y, temperature=T, alpha=0.7)
    assert torch.allclose(a, b, rtol=1e-12)
    kl = (p * (p.log() - F.log_softmax(s / T, -1))).sum(-1).mean()
    assert torch.allclose(a, 0.7 * T**2 * kl + 0.3 * F.cross_entropy(s, y), rtol=1e-12)
    a.backward()  # gradient: T (p_s - mean teacher prob) / N, still exact with an ensemble teacher
    assert torch.allclose(s.grad, 0.7 * T * (F.softmax(s.detach() / T, -1) - p) / 4 + 0.3 * _ce_grad(s, y))
    pm = soften([t1, t2], T, multi_label=True)
    y_ml = (torch.rand(4, 5) > 0.5).to(D)
    assert torch.allclose(
        multilabel_distillation_loss(s, target=y_ml, temperature=T, teacher_probs=pm),
        multilabel_distillation_loss(s, [t1, t2], y_ml, temperature=T),
    )


def _ce_grad(s, y):
    return (F.softmax(s.detach(), -1) - F.one_hot(y, s.shape[-1]).to(s.dtype)) / s.shape[0]


def test_teacher_gets_no_gradient():
    s = _logits(2, 3).requires_grad_()
    t = _logits(2, 3).requires_grad_()
    distillation_loss(s, t, torch.tensor([0, 1])).backward()
    assert t.grad is None and s.grad is not None
    p = torch.softmax(_logits(2, 3), -1).requires_grad_()
    distillation_loss(s, target=torch.tensor([0, 1]), teacher_probs=p).backward()
    multilabel_distillation_loss(s, target=torch.ones(2, 3, dtype=D), teacher_probs=p).backward()
    assert p.grad is None


def test_module_wrapper():
    s, t = _logits(3, 4), _logits(3, 4)
    y = torch.randint(0, 4, (3,))
    m = DistillationLoss(temperature=2.5, alpha=0.2)
    assert torch.equal(m(s, t, y), distillation_loss(s, t, y, temperature=2.5, alpha=0.2))
    y_ml = (torch.rand(3, 4) > 0.5).to(D)
    mm = DistillationLoss(temperature=2.5, alpha=0.2, multi_label=True)
    assert torch.equal(mm(s, t, y_ml), multilabel_distillation_loss(s, t, y_ml, temperature=2.5, alpha=0.2))
    p = soften(t, 2.5)
    assert torch.allclose(m(s, target=y, teacher_probs=p), m(s, t, y))
    assert "temperature=2.5" in repr(m)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(alpha=1.5), "alpha"),
        (dict(reduction="avg"), "reduction"),
    ],
)
def test_bad_arguments(kwargs, match):
    s, t = _logits(2, 3), _logits(2, 3)
    with pytest.raises(ValueError, match=match):
        distillation_loss(s, t, torch.tensor([0, 1]), **kwargs)
    with pytest.raises(ValueError, match=match):
        DistillationLoss(**kwargs)


def test_bad_inputs():
    s, t = _logits(2, 3), _logits(2, 3)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="not both"):
        distillation_loss(s, t, y, teacher_probs=F.softmax(t, -1))
    with pytest.raises(ValueError, match="teacher"):
        distillation_loss(s, None, y, alpha=0.5)
    with pytest.raises(ValueError, match="target"):
        distillation_loss(s, t, None, alpha=0.5)
    assert distillation_loss(s, t, None, alpha=1.0).item() > 0  # pure distillation needs no labels
    with pytest.raises(ValueError, match="does not match"):
        distillation_loss(s, _logits(2, 4), y)
    with pytest.raises(ValueError, match="does not match"):
        distillation_loss(s, t, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="does not match"):
        distillation_loss(s, t, torch.ones(2, 4, dtype=D) / 4)
    with pytest.raises(ValueError, match="probabilities"):
        distillation_loss(s, target=y, teacher_probs=t * 10)
    with pytest.raises(ValueError, match="does not match"):
        multilabel_distillation_loss(s, t, torch.ones(2, 4, dtype=D))
    with pytest.raises(ValueError, match="teacher 1"):
        soften([t, _logits(3, 3)], 2.0)
    with pytest.raises(ValueError, match="weights"):
        soften([t, t], 2.0, weights=[1.0])
