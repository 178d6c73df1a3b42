"""Ensembles (max voting, averaging, weighted averaging, rank averaging) on hand-made score matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sed.inference.ensemble import METHODS, combine, evaluate_members, vote_counts, weights_from_metrics

# three models, four clips, three classes
A = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.4, 0.35, 0.25]])
B = np.array([[0.5, 0.4, 0.1], [0.3, 0.3, 0.4], [0.2, 0.7, 0.1], [0.3, 0.45, 0.25]])
C = np.array([[0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.2, 0.3, 0.5]])


def test_methods_listed():
    assert METHODS == ("vote", "average", "weighted", "rank")


def test_average():
    out = combine([A, B, C], "average")
    assert out.shape == (4, 3) and out.dtype == np.float64
    np.testing.assert_allclose(out[0], [1.3 / 3, 1.4 / 3, 0.1])
    np.testing.assert_allclose(out, (A + B + C) / 3)


def test_vote_majority_one_hot():
    # argmaxes: A -> [0, 1, 2, 0], B -> [0, 2, 1, 1], C -> [1, 1, 2, 2]
    out = combine([A, B, C], "vote")
    np.testing.assert_array_equal(out.argmax(1)[:3], [0, 1, 2])
    np.testing.assert_array_equal(out[:3], np.eye(3)[[0, 1, 2]])
    # row 3: one vote each for 0, 1, 2 -> tie, summed probabilities 0.9, 1.1, 1.0 -> class 1
    np.testing.assert_array_equal(out[3], [0, 1, 0])
    np.testing.assert_allclose(vote_counts([A, B, C])[3], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(vote_counts([A, B, C])[0], [2 / 3, 1 / 3, 0])


def test_vote_tie_broken_by_summed_probability():
    # two models: votes 1-1 between classes 0 and 2; summed prob of class 2 (0.45 + 0.5) beats class 0
    # (0.5 + 0.3)
    p1 = np.array([[0.50, 0.05, 0.45]])
    p2 = np.array([[0.30, 0.20, 0.50]])
    np.testing.assert_array_equal(combine([p1, p2], "vote"), [[0, 0, 1]])
    # tie 0 vs 2 (one vote each): summed 0.45 vs 0.75 -> 2; class 1 has the largest sum (0.80) but no vote
    q1 = np.array([[0.40, 0.35, 0.25]])
    q2 = np.array([[0.05, 0.45, 0.50]])
    np.testing.assert_array_equal(combine([q1, q2], "vote"), [[0, 0, 1]])
    assert combine([q1, q2], "average").argmax() == 1
    # majority beats summed probability: two weak votes for 0 against one confident vote for 2
    r1 = np.array([[0.34, 0.33, 0.33]])
    r2 = np.array([[0.34, 0.33, 0.33]])
    r3 = np.array([[0.00, 0.00, 1.00]])
    np.testing.assert_array_equal(combine([r1, r2, r3], "vote"), [[1, 0, 0]])
    assert combine([r1, r2, r3], "average").argmax() == 2


def test_multilabel_vote():
    p1 = np.array([[0.9, 0.2, 0.6, 0.5]])
    p2 = np.array([[0.8, 0.6, 0.4, 0.1]])
    p3 = np.array([[0.1, 0.7, 0.3, 0.2]])
    # votes (>= 0.5): [2, 2, 1, 1] of 3
    np.testing.assert_array_equal(combine([p1, p2, p3], "vote", multi_label=True), [[1, 1, 0, 0]])
    np.testing.assert_allclose(vote_counts([p1, p2, p3], multi_label=True), [[2 / 3, 2 / 3, 1 / 3, 1 / 3]])
    # even M, 1-1 tie: decided by the mean probability against the threshold
    q1 = np.array([[0.9, 0.55, 0.0]])
    q2 = np.array([[0.2, 0.40, 0.0]])
    # means: 0.55 (>= 0.5 -> 1), 0.475 (-> 0), 0 (no votes -> 0)
    np.testing.assert_array_equal(combine([q1, q2], "vote", multi_label=True), [[1, 0, 0]])
    np.testing.assert_array_equal(combine([q1, q2], "vote", multi_label=True, threshold=0.3), [[1, 1, 0]])


def test_weighted_with_given_weights():
    out = combine([A, B, C], "weighted", weights=[2, 1, 1])
    np.testing.assert_allclose(out, 0.5 * A + 0.25 * B + 0.25 * C)
    np.testing.assert_allclose(out[0], [0.475, 0.425, 0.1])
    # a zero weight drops a model; weights need not sum to 1
    np.testing.assert_allclose(combine([A, B, C], "weighted", weights=[0, 3, 1]), 0.75 * B + 0.25 * C)


def test_weighted_from_metrics_proportional():
    out = combine([A, B, C], "weighted", metrics=[0.5, 0.3, 0.2])
    np.testing.assert_allclose(out, 0.5 * A + 0.3 * B + 0.2 * C)
    np.testing.assert_allclose(weights_from_metrics([1.0, 3.0], "proportional"), [0.25, 0.75])


def test_rank_weights_from_notes_example():
    w = weights_from_metrics([0.7, 0.9, 0.8], "rank")
    np.testing.assert_allclose(w, [1 / 6, 3 / 6, 2 / 6])
    out = combine([A, B, C], "rank", metrics=[0.7, 0.9, 0.8])
    np.testing.assert_allclose(out, A / 6 + B / 2 + C / 3)
    # rank ignores the metric's scale: only the order matters
    np.testing.assert_allclose(combine([A, B, C], "rank", metrics=[0.1, 0.99, 0.5]), out)
    # four models: ranks 1..4, sum 10
    np.testing.assert_allclose(
        weights_from_metrics([0.82, 0.85, 0.80, 0.90]), [2 / 10, 3 / 10, 1 / 10, 4 / 10]
    )


def test_rank_ties_and_lower_is_better():
    # equal metrics share the average rank: ranks [1, 2.5, 2.5]
    np.testing.assert_allclose(weights_from_metrics([0.5, 0.9, 0.9]), [1 / 6, 2.5 / 6, 2.5 / 6])
    # a loss: the lowest is best and gets rank M
    np.testing.assert_allclose(
        weights_from_metrics([0.7, 0.9, 0.8], higher_is_better=False), [3 / 6, 1 / 6, 2 / 6]
    )
    out = combine([A, B, C], "rank", metrics=[0.7, 0.9, 0.8], higher_is_better=False)
    np.testing.assert_allclose(out, A / 2 + B / 6 + C / 3)


def test_single_model_and_torch_inputs():
    for method, kw in [
        ("vote", {}),
        ("average", {}),
        ("weighted", {"weights": [1]}),
        ("rank", {"metrics": [0.5]}),
    ]:
        out = combine([A], method, **kw)
        if method == "vote":
            np.testing.assert_array_equal(out.argmax(1), A.argmax(1))
        else:
            np.testing.assert_allclose(out, A)
    tens = [torch.tensor(A, dtype=torch.float32), torch.tensor(B, dtype=torch.float32)]
    np.testing.assert_allclose(combine(tens, "average"), (A + B) / 2, rtol=1e-6)
    np.testing.assert_allclose(
        combine(torch.stack(tens), "average"), (A + B) / 2, rtol=1e-6
    )  # stacked [M, N, C]
    np.testing.assert_allclose(
        combine(np.stack([A, B]), "rank", metrics=torch.tensor([0.1, 0.2])), A / 3 + 2 * B / 3
    )


def test_evaluate_members_feeds_rank():
    y = np.array([0, 1, 2, 1])

    def accuracy(y_true, scores):
        return float((scores.argmax(1) == y_true).mean())

    m = evaluate_members([A, B, C], y, accuracy)
    # A: [0, 1, 2, 0] -> 3/4; B: [0, 2, 1, 1] -> 2/4; C: [1, 1, 2, 2] -> 2/4
    np.testing.assert_allclose(m, [0.75, 0.5, 0.5])
    np.testing.assert_allclose(weights_from_metrics(m), [3 / 6, 1.5 / 6, 1.5 / 6])
    np.testing.assert_allclose(evaluate_members([torch.tensor(A)], torch.tensor(y), accuracy), [0.75])
    with pytest.raises(ValueError, match="rows"):
        evaluate_members([A, B], y[:3], accuracy)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([A, B], "median"), {}, "unknown ensemble method"),
        (([], "average"), {}, "non-empty"),
        (([A, B[:3]], "average"), {}, "model 1"),
        (([A, B[:, :2]], "average"), {}, "model 1"),
        (([A, B.ravel()], "average"), {}, r"\[N, C\]"),
        (([A, np.full_like(B, np.nan)], "average"), {}, "NaN"),
        (([A, B], "weighted"), {}, "needs weights"),
        (([A, B], "weighted"), {"weights": [1, 2, 3]}, "3 weights for 2 models"),
        (([A, B], "weighted"), {"weights": [1, -1]}, "non-negative"),
        (([A, B], "weighted"), {"weights": [0, 0]}, "positive sum"),
        (([A, B], "weighted"), {"weights": [1, float("nan")]}, "finite"),
        (([A, B], "weighted"), {"weights": [1, 1], "metrics": [0.5, 0.6]}, "not both"),
        (([A, B], "weighted"), {"metrics": [0.5]}, "1 metrics for 2 models"),
        (([A, B], "weighted"), {"metrics": [0.5, -0.1]}, "non-negative"),
        (([A, B], "weighted"), {"metrics": [0.5, 0.1], "higher_is_better": False}, "rank"),
        (([A, B], "rank"), {}, "needs the members' validation metrics"),
        (([A, B], "rank"), {"metrics": [0.5, 0.6, 0.7]}, "3 metrics for 2 models"),
        (([A, B], "rank"), {"metrics": [0.5, 0.6], "weights": [1, 1]}, "takes no weights"),
        (([A, B], "average"), {"weights": [1, 1]}, "takes no weights"),
        (([A, B], "vote"), {"metrics": [1, 1]}, "takes no metrics"),
    ],
)
def test_validation_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        combine(*args, **kwargs)


def test_weights_from_metrics_errors():
    with pytest.raises(ValueError, match="unknown weighting"):
        weights_from_metrics([0.1, 0.2], "softmax")
    with pytest.raises(ValueError, match="non-empty"):
        weights_from_metrics([])
    with pytest.raises(ValueError, match="positive sum"):
        weights_from_metrics([0.0, 0.0], "proportional")
