"""SpecAugment frequency and time masks on ``[B, frames, bins]`` features (AST's layout).

AST (spec ``ast-patchmix-icbhi.md`` §1.1 item 5) applies ``torchaudio.transforms.FrequencyMasking
(freqm)`` and ``TimeMasking(timem)`` to each training clip, one mask each, filling with 0 before
normalisation. Here the masks are drawn by :func:`torchaudio.functional.mask_along_axis_iid`
on the whole batch at once (one independent mask per example, no Python loop over the batch)
after the front end, so the fill value is the front end's image of 0:
``SpecAugment(freqm, timem, mask_value=model.frontend.mask_value)``.

As in torchaudio, a mask of ``freqm`` covers ``w`` consecutive bins with ``w`` uniform on the
integers ``0 .. freqm - 1`` and its start uniform over the positions where it fits (likewise
``timem`` for frames). ``num_freq_masks`` / ``num_time_masks`` masks are drawn independently
(they may overlap). ``iid=False`` uses one mask for the whole batch
(:func:`torchaudio.functional.mask_along_axis`). In eval mode the module is the identity.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn

__all__ = ["SpecAugment"]

TIME_AXIS, FREQ_AXIS = -2, -1


class SpecAugment(nn.Module):
    """Frequency and time masking of features ``[B, frames, bins]`` (any leading dims, any device)."""

    def __init__(
        self,
        freqm: int = 0,
        timem: int = 0,
        num_freq_masks: int = 1,
        num_time_masks: int = 1,
        mask_value: float = 0.0,
        iid: bool = True,
    ):
        super().__init__()
        for name, v in (
            ("freqm", freqm),
            ("timem", timem),
            ("num_freq_masks", num_freq_masks),
            ("num_time_masks", num_time_masks),
        ):
            if isinstance(v, bool) or int(v) != v or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        self.freqm, self.timem = int(freqm), int(timem)
        self.num_freq_masks, self.num_time_masks = int(num_freq_masks), int(num_time_masks)
        self.mask_value, self.iid = float(mask_value), bool(iid)

    def extra_repr(self) -> str:
        return (
            f"freqm={self.freqm}, timem={self.timem}, num_freq_masks={self.num_freq_masks}, "
            f"num_time_masks={self.num_time_masks}, mask_value={self.mask_value}, iid={self.iid}"
        )

    def _mask(self, x: torch.Tensor, width: int, axis: int) -> torch.Tensor:
        axis = x.dim() + axis
        if not self.iid:
            return AF.mask_along_axis(x, width, self.mask_value, axis)
        if x.dim() < 3:  # a single example [frames, bins]: the iid draw needs a batch dimension
            return AF.mask_along_axis_iid(x.unsqueeze(0), width, self.mask_value, axis + 1)[0]
        return AF.mask_along_axis_iid(x, width, self.mask_value, axis)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Masked copy of ``feats`` in training mode; ``feats`` itself in eval mode."""
        if feats.dim() < 2:
            raise ValueError(
                f"SpecAugment expects features [..., frames, bins], got shape {tuple(feats.shape)}"
            )
        if not self.training:
            return feats
        for _ in range(self.num_freq_masks if self.freqm > 0 else 0):
            feats = self._mask(feats, self.freqm, FREQ_AXIS)
        for _ in range(self.num_time_masks if self.timem > 0 else 0):
            feats = self._mask(feats, self.timem, TIME_AXIS)
        return feats
