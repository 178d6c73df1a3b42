"""EfficientAT's release checkpoints (github.com/fschmid56/EfficientAT, ``models/mn/model.py``) onto
:class:`~sed.models.efficientat.EfficientATModel`.

A release ``.pt`` (e.g. ``mn10_as_mAP_471.pt``) is a bare ``state_dict`` of the reference ``MN`` model:
``features.0`` (stem), ``features.1..15`` (inverted residual blocks, squeeze-and-excitation under
``block.N.conc_se_layers.0``), ``features.16`` (last 1x1 conv) and ``classifier.2`` / ``classifier.5``
(the "mlp" head's Linears). The width comes from the last conv. Another class count re-initialises the
last Linear ``head.3`` only, as the reference does. The short names (declared in
:mod:`sed.models.efficientat`) download the release files from the official GitHub release.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from sed.errors import CheckpointError
from sed.models import efficientat as effat
from sed.models.pretrained.build import Arch, Importer, sed_arch
from sed.models.pretrained.sources import Contents

__all__ = ["IMPORTER", "from_reference"]

_OTHER_WIDTHS = (0.1, 0.2, 0.6, 0.8, 1.2, 1.4, 1.6)  # the reference's other mnXX widths
_NUM_BLOCKS = len(effat.block_settings(1.0))


def claims(contents: Contents) -> bool:
    keys = contents.state
    return (
        "features.0.0.weight" in keys
        and "features.1.block.0.0.weight" in keys
        and any(str(k).startswith("classifier.") for k in keys)
    )


def _rename(key: str) -> str | None:
    """A reference key -> the sed key, or None where it has no place in the model."""
    m = re.match(r"features\.(\d+)\.(.+)$", key)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        rest = rest.replace(".conc_se_layers.0.", ".")
        if i == 0:
            return "stem." + rest
        if i <= _NUM_BLOCKS:
            return f"blocks.{i - 1}.{rest}"
        return "last_conv." + rest if i == _NUM_BLOCKS + 1 else None
    m = re.match(r"classifier\.([25])\.(weight|bias)$", key)
    return f"head.{0 if m.group(1) == '2' else 3}.{m.group(2)}" if m else None


def from_reference(state: Mapping) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference-named tensors -> (sed-named tensors, the keys that have no place in the model)."""
    out, extra = {}, []
    for k, v in state.items():
        new = _rename(str(k)) if isinstance(v, torch.Tensor) else None
        if new is None:
            extra.append(str(k))
        else:
            out[new] = v
    return out, extra


def _size_of(state: Mapping, desc: str) -> tuple[str, dict]:
    """The registered size (and width override) whose last conv is as wide as the file's."""
    w = state.get("last_conv.0.weight")
    if not isinstance(w, torch.Tensor) or w.dim() != 4:
        raise CheckpointError(desc, "does not fit EfficientAT: missing keys ['features.16.0.weight']")
    width = int(w.shape[0])
    for name, arch in effat.EFFICIENTAT_SIZES.items():
        if 6 * effat.block_settings(arch["width_mult"])[-1][3] == width:
            return name, {}
    for mult in _OTHER_WIDTHS:
        if 6 * effat.block_settings(mult)[-1][3] == width:
            return "efficientat_mn10", {"width_mult": mult}
    raise CheckpointError(desc, f"its last conv has {width} channels, no EfficientAT width gives that")


def arch_from(contents: Contents, state: dict[str, torch.Tensor]) -> Arch:
    if contents.sed is not None:
        return sed_arch(contents)
    size, arch = _size_of(state, contents.desc)
    bias = state.get("head.3.bias")
    n = int(bias.shape[0]) if isinstance(bias, torch.Tensor) and bias.dim() == 1 else None
    return Arch(size, arch, n, kind="efficientat")


def map_keys(contents: Contents) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference keys -> sed keys; a key with no place in the model stays as it is (named as unexpected)."""
    state, extra = from_reference(contents.state)
    return {
        **state,
        **{k: contents.state[k] for k in extra if isinstance(contents.state[k], torch.Tensor)},
    }, []


IMPORTER = Importer(
    "efficientat",
    "EfficientAT",
    "an EfficientAT checkpoint (features.* and classifier.* of the release MN)",
    claims,
    arch_from,
    map_keys,
    head="head.3.",
    head_what="the last Linear; ",
)
