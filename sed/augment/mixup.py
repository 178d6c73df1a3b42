"""Waveform mixup as in AST (spec ``ast-patchmix-icbhi.md`` §1.1 item 8), batched.

AST mixes in the data loader: with probability ``mixup`` a clip is mixed with a partner drawn
uniformly from the training set, ``x = lam * x_a + (1 - lam) * x_b`` with ``lam ~ Beta(10, 10)``
drawn for that clip, and its label becomes ``lam * y_a + (1 - lam) * y_b``. Here the same happens
on a batch at once, on any device: every example ``i`` draws its own ``lam_i ~ Beta(alpha, alpha)``
and its partner is ``index[i]`` of a random permutation of the batch (the partner is drawn from
the batch, not the whole set; a fixed point of the permutation mixes a clip with itself, i.e. leaves
it unchanged). An example left unmixed (probability ``1 - prob``) gets ``lam_i = 1``.

``lengths`` (valid samples per clip) are honoured: samples past a clip's length count as silence
(they are zeroed before mixing) and the mixed clip is as long as the longer of the two,
``max(lengths[i], lengths[index[i]])`` (``lengths[i]`` where ``lam_i = 1``). Targets are
``[B, C]`` floats, one-hot or multi-hot; the mixed targets keep their sums for one-hot rows.
The partner's targets are ``targets[index]`` (for losses that want them apart, as Patch-Mix's).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["Mixup", "MixupOutput", "mixup"]


class MixupOutput(NamedTuple):
    wave: torch.Tensor  #: mixed waveforms, same shape and dtype as the input
    targets: torch.Tensor  #: ``lam * targets + (1 - lam) * targets[index]``, ``[B, C]``
    lam: torch.Tensor  #: ``[B]`` weight of each example's own clip (1 where not mixed)
    index: torch.Tensor  #: ``[B]`` partner of each example (a permutation of ``0..B-1``)
    lengths: torch.Tensor | None  #: valid samples of the mixed clips, or None


def _sample_beta(alpha: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` draws of Beta(alpha, alpha) on the CPU, from ``generator`` when given (reproducible)."""
    dist = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    if generator is None:
        return dist.sample((n,))
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[]):  # torch.distributions take no generator
        torch.manual_seed(seed)
        return dist.sample((n,))


def mixup(
    wave: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 10.0,
    prob: float = 1.0,
    lengths: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> MixupOutput:
    """Mix each example of ``wave`` ``[B, ..., T]`` with a random partner of the batch (module docstring).

    ``alpha``: Beta parameter (AST: 10). ``prob``: chance that an example is mixed (AST's ``mixup``).
    ``generator``: a CPU ``torch.Generator`` for reproducible draws (else the global RNG).
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    if wave.dim() < 2:
        raise ValueError(f"mixup expects a batch of waveforms [B, ..., T], got shape {tuple(wave.shape)}")
    b = wave.shape[0]
    if targets.dim() != 2 or targets.shape[0] != b or not targets.is_floating_point():
        raise ValueError(
            f"mixup expects float targets [{b}, C] (one-hot or multi-hot), got "
            f"{targets.dtype} {tuple(targets.shape)}"
        )
    if lengths is not None and tuple(lengths.shape) != (b,):
        raise ValueError(f"lengths must have shape [{b}], got {tuple(lengths.shape)}")
    if prob == 0.0:  # nothing is mixed: the inputs themselves
        return MixupOutput(
            wave, targets, torch.ones(b, device=wave.device), torch.arange(b, device=wave.device), lengths
        )
    lam = _sample_beta(alpha, b, generator)
    if prob < 1.0:
        lam = torch.where(torch.rand(b, generator=generator) < prob, lam, torch.ones_like(lam))
    index = torch.randperm(b, generator=generator)
    lam, index = lam.to(wave.device), index.to(wave.device)
    if lengths is not None:
        lengths = lengths.to(wave.device)
        valid = torch.arange(wave.shape[-1], device=wave.device) < lengths.view(b, *[1] * (wave.dim() - 1))
        wave = wave * valid
        lengths = torch.where(lam < 1, torch.maximum(lengths, lengths[index]), lengths)
    w = lam.to(wave.dtype).view(b, *[1] * (wave.dim() - 1))
    mixed = w * wave + (1 - w) * wave[index]
    t = lam.to(targets.device, targets.dtype)[:, None]
    mixed_targets = t * targets + (1 - t) * targets[index.to(targets.device)]
    return MixupOutput(mixed, mixed_targets, lam, index, lengths)


class Mixup(nn.Module):
    """:func:`mixup` as a module: mixes in training mode, returns its inputs (``lam = 1``,
    ``index = arange``) in eval mode. ``forward(wave, targets, lengths=None) -> MixupOutput``."""

    def __init__(self, alpha: float = 10.0, prob: float = 1.0):
        super().__init__()
        if alpha <= 0 or not 0.0 <= prob <= 1.0:
            raise ValueError(f"need alpha > 0 and 0 <= prob <= 1, got alpha={alpha}, prob={prob}")
        self.alpha, self.prob = float(alpha), float(prob)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, prob={self.prob}"

    def forward(
        self,
        wave: torch.Tensor,
        targets: torch.Tensor,
        lengths: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MixupOutput:
        return mixup(wave, targets, self.alpha, self.prob if self.training else 0.0, lengths, generator)
