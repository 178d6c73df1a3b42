"""Transfer-learning modes of the notes (freezing parts of a pretrained model).

- ``all``: fine-tune everything.
- ``head``: train only the classifier head ("Transfer Learning": every other layer frozen).
- ``frozen``: the backbone is a fixed feature extractor ("Extract Feature Vector"): frozen *and*
  kept in eval mode (no dropout, no BatchNorm updates) and run without autograd, so training
  costs one forward of the backbone plus the head.
- ``last_n``: fine-tune the last ``n`` blocks, the layers after them (final norm) and the head
  ("Fine-tuning": layers near the input stay frozen).

Models expose ``blocks`` (their main stages, in order) and ``head``.
"""

from __future__ import annotations

from torch import nn

MODES = ("all", "head", "frozen", "last_n")


def apply_transfer(model: nn.Module, mode: str = "all", n: int = 0) -> list[str]:
    """Set ``requires_grad`` per the mode; returns the names of the trainable top-level parts."""
    if mode not in MODES:
        raise ValueError(f"unknown transfer mode {mode!r}; use one of {MODES}")
    for p in model.parameters():
        p.requires_grad = mode == "all"
    if mode == "all":
        return ["all"]
    head = getattr(model, "head", None)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no 'head' module; transfer mode {mode!r} needs one")
    trainable = [head]
    names = ["head"]
    if mode == "last_n":
        blocks = list(getattr(model, "blocks", []))
        if not 0 < n <= len(blocks):
            raise ValueError(
                f"finetune_blocks must be in 1..{len(blocks)} for {type(model).__name__}, got {n}"
            )
        trainable += blocks[-n:]
        names.append(f"blocks[-{n}:]")
        # layers between the last block and the head (e.g. AST's final LayerNorm) train with them
        order = [name for name, _ in model.named_children()]
        if "blocks" in order and "head" in order:
            for name in order[order.index("blocks") + 1 : order.index("head")]:
                trainable.append(getattr(model, name))
                names.append(name)
    for module in trainable:
        for p in module.parameters():
            p.requires_grad = True
    return names


def backbone_modules(model: nn.Module) -> list[nn.Module]:
    """Every direct child except the head (what ``frozen`` keeps in eval mode)."""
    return [m for name, m in model.named_children() if name != "head"]
