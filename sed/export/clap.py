"""An export-time patch of fused CLAP (:mod:`sed.models.clap`) for ``torch.onnx.export(dynamo=True)``.

transformers' ``ClapAudioEncoder`` turns the ``is_longer`` flags into the indices of the long clips,
``torch.where(is_longer == 1)[0]``, and its ``ClapAudioPatchEmbed`` branches on ``len(indices) > 0`` and
indexes with them: a size that depends on the data, on which ``torch.export`` stops
(``GuardOnDataDependentSymNode``). :class:`~sed.models.clap.ClapAudio` sets ``is_longer`` the same for every
clip (``forward_fbank_pooled``): none (its default, LAION's inference) or all (``fuse_short_clips``), so
those indices are always empty or ``arange(batch)``. :func:`fused_clap_export` hands the patch embedding
exactly that, for the duration of an export: transformers' code still computes the features (its fusion
branch on every clip or on none, as in PyTorch), and the exported graph's logits equal PyTorch's
(tests/export/test_clap_export.py). The branch ``len(indices) > 0`` still takes a Python ``int`` of the
batch size, which torch.export's non-strict tracing fixes to the example's batch:
:func:`sed.export.onnx.export_onnx` therefore traces a patched model with
``torch.export.export(strict=True)`` (dynamo keeps the size symbolic, the batch ``>= 1`` decides the branch)
and hands that program to the ONNX exporter. The patch is on the model's own modules (instance attributes,
removed on exit), not on transformers' classes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["fused_clap_export"]


def _long_clips(forward, every: bool):
    def patched(hidden_states: torch.Tensor, is_longer_idx: torch.Tensor | None = None) -> torch.Tensor:
        if is_longer_idx is not None:  # ClapAudio marks every clip long (0..batch-1) or none (no index)
            n = hidden_states.shape[0] if every else 0
            is_longer_idx = torch.arange(n, device=hidden_states.device)
        return forward(hidden_states, is_longer_idx)

    return patched


@contextmanager
def fused_clap_export(model: nn.Module) -> Iterator[int]:
    """Within the block, the patch embedding of each fused :class:`~sed.models.clap.ClapAudio` in ``model``
    takes ``arange(batch)`` as the indices of its long clips (module docstring); yields how many were
    patched (0 for any other model, which is left as it is)."""
    from sed.models.clap import ClapAudio

    fused = [m for m in model.modules() if isinstance(m, ClapAudio) and m.fused]
    embeds = [m.tower.audio_model.audio_encoder.patch_embed for m in fused]
    for m, embed in zip(fused, embeds):
        embed.forward = _long_clips(embed.forward, m.fuse_short_clips)
    try:
        yield len(embeds)
    finally:
        for embed in embeds:
            del embed.forward  # the class's forward again
