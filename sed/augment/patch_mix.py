"""Patch-Mix (Bae et al. 2023), spec ``ast-patchmix-icbhi.md`` §2.3.

Mixes patch *tokens* ``[B, N, D]`` after the patch embedding and before the cls/dist tokens and
the positional embedding are added (:meth:`sed.models.ast.ASTModel.forward_patch_mix`):

* ``lam ~ Beta(beta, beta)`` (1 when ``beta <= 0``), ``index = randperm(B)``;
* ``num_mask = int(N * (1 - lam))`` patch positions, ONE random set shared by the whole batch,
  are taken from the partner: ``x[:, mask] = x[index][:, mask]`` (out of place here);
* ``lam`` is recomputed from what was swapped: ``1 - num_mask / N``.

The loss is ``lam * CE(y_a) + (1 - lam) * CE(y_b)`` with ``y_a = y`` and ``y_b = y[index]``
(:func:`sed.losses.patchmix_contrastive.mixed_ce`).

With ``time_domain=True`` (not used by the published scripts) the tokens are seen as the
frequency-major grid ``(f, t)`` and whole time columns are swapped: ``num_mask = int(t * (1 -
lam))``, ``lam = 1 - num_mask / t``.

Randomness: every draw comes from ``generator`` (or torch's global RNG), so
``seed_everything`` / ``torch.manual_seed`` make it repeatable. ``lam`` is drawn with numpy's
Beta sampler from a seed taken from that torch stream.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["patch_mix", "sample_lam"]


def sample_lam(beta: float, generator: torch.Generator | None = None) -> float:
    """``Beta(beta, beta)`` sample (1.0 when ``beta <= 0``), drawn from the torch RNG stream."""
    if beta <= 0:
        return 1.0
    device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    return float(np.random.default_rng(seed).beta(beta, beta))


def patch_mix(
    x: torch.Tensor,
    y: torch.Tensor,
    beta: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    time_domain: bool = False,
    grid: tuple[int, int] | None = None,
    lam: float | None = None,
    index: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """Patch-Mix of tokens ``x [B, N, D]`` with labels ``y [B, ...]``.

    Returns ``(x_mixed, y_a, y_b, lam, index)``: ``y_a = y``, ``y_b = y[index]``, ``lam`` the
    recomputed weight of ``y_a`` (a float), ``index`` the partner of each sample (on ``x``'s
    device). ``x`` is not modified. ``time_domain`` needs ``grid = (f, t)`` with ``f * t = N``.

    The three random choices can be given instead of drawn (tests, ablations, replaying a run):
    ``lam`` the mixing weight; ``index`` ``[B]`` the partner of each sample; ``mask`` the mixed
    patch positions (time columns with ``time_domain``), whose count is ``num_mask`` (with
    ``lam`` given too it must be ``int(width * (1 - lam))``). What is not given is drawn, in the
    reference's order: ``lam``, ``index``, then the mask permutation.
    """
    if x.dim() != 3:
        raise ValueError(f"patch_mix expects tokens [B, N, D], got shape {tuple(x.shape)}")
    b, n, d = x.shape
    if y.shape[0] != b:
        raise ValueError(f"{y.shape[0]} labels for a batch of {b}")
    if time_domain and (grid is None or grid[0] * grid[1] != n):
        raise ValueError(f"time_domain Patch-Mix needs grid=(f, t) with f * t = {n}, got {grid}")
    width = grid[1] if time_domain else n
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.long).flatten()
        k = mask.numel()
        if k and (int(mask.min()) < 0 or int(mask.max()) >= width or mask.unique().numel() != k):
            raise ValueError(f"mask must hold distinct positions in [0, {width}), got {mask.tolist()}")
        if lam is not None and 0.0 <= float(lam) <= 1.0 and k != int(width * (1.0 - float(lam))):
            raise ValueError(f"mask has {k} positions but lam={lam} mixes {int(width * (1.0 - float(lam)))}")
    elif lam is None:
        lam = sample_lam(beta, generator)
    if lam is not None and not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if index is None:
        index = torch.randperm(b, generator=generator, device=gen_device)
    else:
        index = torch.as_tensor(index, dtype=torch.long).flatten()
        if index.numel() != b or (b and (int(index.min()) < 0 or int(index.max()) >= b)):
            raise ValueError(f"index must hold {b} sample indices in [0, {b}), got {index.tolist()}")
    index = index.to(x.device)
    if mask is None:
        num_mask = int(width * (1.0 - float(lam)))
        mask = torch.randperm(width, generator=generator, device=gen_device)[:num_mask]
    num_mask = mask.numel()
    mask = mask.to(x.device)
    if not time_domain:
        out = x.clone()
        out[:, mask] = x[index][:, mask]
    else:
        f, t = grid
        square = x.reshape(b, f, t, d).clone()
        square[:, :, mask] = x.reshape(b, f, t, d)[index][:, :, mask]
        out = square.reshape(b, n, d)
    lam = 1.0 - num_mask / width
    return out, y, y[index.to(y.device)], lam, index
