"""BatchNorm running statistics that mean something from the first training step.

A BatchNorm layer's running statistics are an exponential moving average with weight ``momentum``
per batch, started at mean 0 and variance 1. With the small momentum of some references (0.01 in
EfficientAT and in CED's ``init_bn``) a freshly built model needs hundreds of steps before its
eval-mode statistics leave that start: after a short run every eval-mode score is uniform (or, on
CED's dB input, off by ~100 dB). :func:`warm_start_batchnorm` makes each layer weigh its ``n``-th
batch by ``max(momentum, 1 / n)``: the running statistics are the plain mean of the batches seen
until the average's window (``1 / momentum`` batches) is full, then the reference's moving average.
It is the bias correction of Adam's moments, applied to BatchNorm. A layer whose statistics already
count that many batches behaves exactly as the reference from its first step; eval mode is never
touched. Weights loaded from a pretrained source end the warm start (:func:`end_warm_start`): their
statistics are the source's, even when the source does not store ``num_batches_tracked`` (PyTorch then
leaves the counter at 0, which would let the first training batch replace them).
"""

from __future__ import annotations

from torch import nn

__all__ = ["end_warm_start", "warm_start_batchnorm"]


def _warm_momentum(bn: nn.modules.batchnorm._BatchNorm, args) -> None:
    if not (bn.training and bn.track_running_stats) or bn.warm_done:
        return
    seen = int(bn.num_batches_tracked)  # batches already averaged (read once per step while warming)
    bn.momentum = max(bn.warm_momentum, 1.0 / (seen + 1))
    bn.warm_done = bn.momentum == bn.warm_momentum


def warm_start_batchnorm(module: nn.Module) -> nn.Module:
    """Give every BatchNorm layer in ``module`` (with a momentum; not ``None``, the cumulative mean)
    the warm start of the module docstring; returns ``module``."""
    for m in module.modules():
        if (
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.momentum is not None
            and not hasattr(m, "warm_done")
        ):
            m.warm_momentum, m.warm_done = float(m.momentum), False
            m.register_forward_pre_hook(_warm_momentum)
    return module


def end_warm_start(module: nn.Module) -> nn.Module:
    """Give every warm-started BatchNorm layer of ``module`` its reference momentum from the next step on
    (for statistics loaded from a source, whatever its counter); returns ``module``."""
    for m in module.modules():
        if getattr(m, "warm_done", True) is False:
            m.momentum, m.warm_done = m.warm_momentum, True
    return module
