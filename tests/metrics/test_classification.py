"""ICBHI score (spec ast-patchmix-icbhi.md §2.6): function and streaming Metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.utilities import dim_zero_sum

from sed.metrics.classification import ICBHIScore, icbhi_hits_counts, icbhi_score, icbhi_score_from_counts

# 4 normals (3 right), 3 crackles (1 right, 1 called wheeze, 1 called normal), 2 wheezes (1 right,
# 1 called both), 1 both (right)
Y = [0, 0, 0, 0, 1, 1, 1, 2, 2, 3]
P = [0, 0, 0, 2, 1, 2, 0, 2, 3, 3]


def test_four_class_crackle_as_wheeze_is_a_miss():
    sp, se, score = icbhi_score(Y, P)
    assert sp == pytest.approx(75.0) and se == pytest.approx(50.0) and score == pytest.approx(62.5)
    hits, counts = icbhi_hits_counts(Y, P)
    assert hits.tolist() == [3, 1, 1, 1] and counts.tolist() == [4, 3, 2, 1]


def test_two_class_eval():
    # normal hit iff pred == 0; abnormal hit iff pred > 0 (any abnormal class)
    sp, se, score = icbhi_score(Y, P, two_class=True)
    assert (
        sp == pytest.approx(75.0)
        and se == pytest.approx(500 / 6)
        and score == pytest.approx((75 + 500 / 6) / 2)
    )
    # 2-class labels: the same counts either way
    y2, p2 = [0, 0, 1, 1, 1], [0, 1, 1, 0, 1]
    assert icbhi_score(y2, p2) == pytest.approx(icbhi_score(y2, p2, two_class=True))
    assert icbhi_score(y2, p2) == pytest.approx((50.0, 200 / 3, (50 + 200 / 3) / 2))


def test_exact_get_score_arithmetic_and_inputs():
    # epsilons in the denominators, exactly as get_score: nothing of a class gives 0, not NaN
    sp, se, score = icbhi_score([1, 2], [1, 1])
    assert sp == 0.0 and se == 1 / (2 + 1e-10) * 100 and score == se / 2
    assert icbhi_score_from_counts([3, 1, 1, 1], [4, 3, 2, 1]) == (
        3 / (4 + 1e-10) * 100,
        3 / (6 + 1e-10) * 100,
        (3 / (4 + 1e-10) * 100 + 3 / (6 + 1e-10) * 100) / 2,
    )
    want = icbhi_score(Y, P)
    assert icbhi_score(np.array(Y), np.array(P)) == want
    assert icbhi_score(torch.tensor(Y), torch.tensor(P)) == want
    logits = torch.nn.functional.one_hot(torch.tensor(P), 4).float() * 3 - 1
    assert icbhi_score(torch.tensor(Y), logits) == want  # [N, C] scores -> argmax
    for bad in (([0, 1], [0]), ([0, -1], [0, 0]), ([0.5, 1], [0, 1])):
        with pytest.raises(ValueError):
            icbhi_score(*bad)


@pytest.mark.parametrize("two_class", [False, True])
def test_metric_accumulates_like_one_call(two_class):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (103,), generator=g)
    logits = torch.randn(103, 4, generator=g)
    metric = ICBHIScore(two_class=two_class)
    for a in range(0, 103, 16):
        metric.update(logits[a : a + 16], y[a : a + 16])
    sp, se, score = metric.compute()
    want = icbhi_score(y, logits.argmax(1), two_class=two_class)
    assert (sp.item(), se.item(), score.item()) == pytest.approx(want, rel=1e-6)
    assert metric.hits.dtype == torch.long and metric._reductions["hits"] is dim_zero_sum
    metric.reset()
    metric.update(torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert [v.item() for v in metric.compute()] == pytest.approx(icbhi_score([0, 1], [0, 0], two_class))
    with pytest.raises(ValueError):
        metric.update(torch.tensor([0]), torch.tensor([4]))


def test_metric_state_merges_like_ddp():
    """Two processes' states summed (what dist_reduce_fx='sum' does) give the one-call score."""
    a, b = ICBHIScore(), ICBHIScore()
    a.update(torch.tensor(P[:5]), torch.tensor(Y[:5]))
    b.update(torch.tensor(P[5:]), torch.tensor(Y[5:]))
    a.merge_state(b)
    assert [v.item() for v in a.compute()] == pytest.approx(icbhi_score(Y, P))
