"""Linear probes on fixed embeddings, fitted in torch: logistic regression (L-BFGS) and ridge (closed form).

:func:`fit_logistic` minimises the mean cross-entropy of ``x @ weight.T + bias`` plus
``l2 / 2 * ||weight||^2`` (the bias is not penalised) with full-batch L-BFGS (strong Wolfe line
search) in float64 on the CPU, from zero weights: the objective is strictly convex for ``l2 > 0``,
so the result is its unique minimum, and the same data give the same weights bit for bit. No
scikit-learn needed; few-shot evaluation (:mod:`sed.inference.fewshot`) and training code can both
use it. ``multi_label=True`` fits one binary logistic regression per class (the mean binary
cross-entropy of multi-hot targets ``y [N, C]``) with the same optimiser.

:func:`fit_ridge` is the linear probe: least squares of the targets (one-hot or multi-hot) on
``[x, 1]`` with ``l2 * ||weight||^2`` (bias unpenalised), solved in closed form in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fit_logistic", "fit_ridge", "logistic_logits"]


def fit_logistic(
    x,
    y,
    num_classes: int | None = None,
    l2: float = 1e-2,
    steps: int = 100,
    tolerance: float = 1e-9,
    multi_label: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight ``[C, D]``, bias ``[C]``), float32, of the L2-regularised logistic regression of
    labels ``y [N]`` (0..C-1) on features ``x [N, D]`` (see the module docstring). ``steps`` bounds
    the L-BFGS iterations; it stops earlier when the gradient falls below ``tolerance``."""
    with torch.inference_mode(False), torch.enable_grad():  # also when called under inference_mode
        x = torch.as_tensor(x).detach().to("cpu", torch.float64).clone()
        y = torch.as_tensor(y).detach().to("cpu", torch.float64 if multi_label else torch.long).clone()
        return _fit(x, y, num_classes, l2, steps, tolerance, multi_label)


def _check_targets(x: torch.Tensor, y: torch.Tensor, num_classes: int | None, multi_label: bool) -> int:
    want = 2 if multi_label else 1
    if x.dim() != 2 or y.dim() != want or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        shape = "[N, C]" if multi_label else "[N]"
        raise ValueError(
            f"expected x [N, D] and y {shape} with N >= 1, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if multi_label:
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(f"y has {y.shape[1]} classes, not {num_classes}")
        if ((y != 0) & (y != 1)).any():
            raise ValueError("multi-label targets must be 0 or 1")
        return int(y.shape[1])
    num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return num_classes


def _fit(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int | None,
    l2: float,
    steps: int,
    tolerance: float,
    multi_label: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    num_classes = _check_targets(x, y, num_classes, multi_label)
    if not l2 >= 0 or steps < 1:
        raise ValueError(f"l2 must be >= 0 and steps >= 1, got {l2} and {steps}")
    if not torch.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=steps,
        tolerance_grad=tolerance,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        logits = x @ weight.T + bias
        data = F.binary_cross_entropy_with_logits(logits, y) if multi_label else F.cross_entropy(logits, y)
        loss = data + 0.5 * l2 * (weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach().float(), bias.detach().float()


def fit_ridge(
    x, y, num_classes: int | None = None, l2: float = 1e-2, multi_label: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight ``[C, D]``, bias ``[C]``), float32: the least-squares fit of one-hot (or multi-hot) targets
    on ``x`` with the ridge penalty ``l2 * N * ||weight||^2`` (the mean squared error's scale), bias
    unpenalised, from the normal equations in float64."""
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    y = torch.as_tensor(y).detach().to("cpu", torch.float64 if multi_label else torch.long)
    num_classes = _check_targets(x, y, num_classes, multi_label)
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    if not torch.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    targets = y if multi_label else F.one_hot(y, num_classes).double()
    xb = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    penalty = torch.full((xb.shape[1],), l2 * x.shape[0], dtype=x.dtype)
    penalty[-1] = 0.0
    sol = torch.linalg.lstsq(xb.T @ xb + torch.diag(penalty), xb.T @ targets).solution  # [D + 1, C]
    return sol[:-1].T.contiguous().float(), sol[-1].contiguous().float()


def logistic_logits(x, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T + bias`` in float32."""
    return torch.as_tensor(x).float() @ weight.T + bias
