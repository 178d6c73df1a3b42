"""The original AST repository's checkpoints (``audioset_10_10_0.4593.pth``: ``module.v.*`` +
``module.mlp_head.*``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

_ORIGINAL_NAME = re.compile(r"(?:^|_)(\d+)_(\d+)_\d+\.\d+\.pth$")  # audioset_10_10_0.4593.pth


def from_original(sd: Mapping) -> tuple[dict, list[str]]:
    """Original AST keys (``v.*``, ``mlp_head.*``) -> sed keys; the DeiT heads are dropped."""
    state, dropped = {}, []
    for k, v in sd.items():
        if k.startswith(("v.head.", "v.head_dist.")):
            dropped.append(k)
        elif k.startswith("v."):
            state[k[2:]] = v
        elif k.startswith("mlp_head."):
            state["head." + k[len("mlp_head.") :]] = v
        else:
            state[k] = v  # reported as unexpected
    return state, dropped


def strides_from_name(filename: str | None) -> tuple[int, int] | None:
    """``(fstride, tstride)`` from an original file name such as ``audioset_10_10_0.4593.pth``."""
    if filename and (m := _ORIGINAL_NAME.search(os.path.basename(filename))):
        return int(m.group(1)), int(m.group(2))
    return None
