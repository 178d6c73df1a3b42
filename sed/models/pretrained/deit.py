"""timm ImageNet DeiT weights (distilled: cls + dist tokens), the AST starting point of spec §1.2."""

from __future__ import annotations

from sed.errors import CheckpointError

#: timm ImageNet DeiT (distilled: cls + dist tokens) that AST can start from.
DEIT_NAMES = ("deit_base_distilled_patch16_384", "deit_base_distilled_patch16_224",
              "deit_small_distilled_patch16_224", "deit_tiny_distilled_patch16_224")


def deit_by_name(name: str) -> dict:
    """The state dict of a timm DeiT, downloaded by timm."""
    import timm

    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as err:
        raise CheckpointError(name, f"cannot get the timm ImageNet weights: {err}") from None
