"""What every AST weights importer shares: the resolved source, safe reading, and the architecture read from shapes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from sed.checkpoint import read_checkpoint
from sed.errors import CheckpointError, short
from sed.models.ast import default_num_heads

#: Speech Commands V2 fbank statistics of the AST recipe (the AudioSet ones are the model default).
SC_STATS = {"mean": -6.845978, "std": 5.5654526}


@dataclass
class Source:
    """A resolved source: sed-layout tensors plus what the source says about the architecture."""

    kind: str  # hf | original | deit | sed
    state: dict
    arch: dict  # ASTModel kwargs the source defines
    grid: tuple[int, int]  # (f, t) of its pos_embed
    desc: str
    labels: list[str] | None = None
    dropped: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- safe reading and key layouts
def load_state_file(path) -> dict:
    """Tensors of a weights file, read without executing code (see :func:`sed.checkpoint.read_checkpoint`)."""
    return read_checkpoint(path)[1]


def unwrap_state(obj, desc) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded file (``state_dict``/``model`` wrappers, ``module.`` prefix)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(desc, f"not a state dict but a {type(obj).__name__}")
    if any(k in obj for k in ("sed", "sed_meta")):
        raise CheckpointError(desc, "is a sed checkpoint in memory: pass its path instead")
    for key in ("state_dict", "model", "model_state_dict"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    sd = {str(k).removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(desc, "holds no tensors")
    return sd


def tensor_of(state: Mapping, key: str, dims: int, desc) -> torch.Tensor:
    """``state[key]``, a CheckpointError naming ``desc`` unless it is there with ``dims`` non-empty dimensions."""
    if key not in state:
        raise CheckpointError(desc, f"missing tensor {key!r}")
    t = state[key]
    if t.dim() != dims or 0 in t.shape:
        raise CheckpointError(desc, f"{key} of shape {tuple(t.shape)} is not a {dims}-d weight")
    return t


def detect_format(sd: Mapping, desc) -> str:
    """``hf`` (transformers v4/v5 names), ``original`` (AST ``v.*``), ``deit`` (timm) or ``sed``."""
    if any(k.startswith(("audio_spectrogram_transformer.", "classifier.dense.", "embeddings.patch_")) for k in sd):
        return "hf"
    if any(k.startswith("v.") for k in sd):
        return "original"
    if {"pos_embed", "patch_embed.proj.weight", "dist_token"} <= set(sd):
        w = sd["patch_embed.proj.weight"]
        return "deit" if (w.dim() == 4 and w.shape[1] != 1) or "head_dist.weight" in sd else "sed"
    raise CheckpointError(desc, "not an AST checkpoint (original, Hugging Face, sed) nor a distilled DeiT state dict")


def _guess_grid(n: int, p: int, strides, desc, fdim: int = 128):
    """(fstride, tstride, input_tdim, (f, t)) of an AST pos_embed with ``n`` patch tokens."""
    if not 1 <= p <= fdim:
        raise CheckpointError(desc, f"patch size {p} does not fit {fdim} mel bins")
    if strides and not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in strides):
        raise CheckpointError(desc, f"strides {short(strides)} are not positive integers")
    cands = [tuple(strides)] if strides else [(s, s) for s in (10, 12, 14, 16)]
    for exact in (True, False):
        for fs, ts in cands if exact else cands[:1]:
            f = (fdim - p) // fs + 1
            if n % f:
                continue
            t = n // f
            tdim = next((d for d in (1024, 512, 128, 798, 256) if (d - p) // ts + 1 == t), None)
            if tdim is not None or not exact:
                return fs, ts, tdim or (t - 1) * ts + p, (f, t)
    raise CheckpointError(desc, f"cannot tell the patch grid of a pos_embed with {n} patch tokens; "
                                "name the file <dataset>_<fstride>_<tstride>_<score>.pth")


def infer_arch(state: Mapping, desc, *, strides=None, deit: bool = False, hf_eps: bool = False):
    """ASTModel kwargs readable from tensor shapes (heads by width: DeiT's rule) and the source grid."""
    d = tensor_of(state, "cls_token", 3, desc).shape[-1]
    pe, w = tensor_of(state, "pos_embed", 3, desc), tensor_of(state, "patch_embed.proj.weight", 4, desc)
    fc1 = tensor_of(state, "blocks.0.mlp.fc1.weight", 2, desc)
    depth = 1 + max(int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    arch = {"embed_dim": d, "depth": depth, "num_heads": default_num_heads(d), "mlp_ratio": fc1.shape[0] / d,
            "patch_size": w.shape[-1], "qkv_bias": "blocks.0.attn.qkv.bias" in state}
    if "head.1.weight" in state:
        arch["num_classes"] = tensor_of(state, "head.1.weight", 2, desc).shape[0]
    if hf_eps:
        arch.update(block_eps=1e-12, norm_eps=1e-12, head_eps=1e-12)
    n = pe.shape[1] - 2
    if n < 1:
        raise CheckpointError(desc, f"pos_embed of shape {tuple(pe.shape)} holds no patch tokens")
    if deit:
        g = math.isqrt(n)
        if g * g != n:
            raise CheckpointError(desc, f"DeiT pos_embed with {n} patch tokens is not a square grid")
        return arch, (g, g)
    fs, ts, tdim, grid = _guess_grid(n, arch["patch_size"], strides, desc)
    arch.update(fstride=fs, tstride=ts, input_tdim=tdim, input_fdim=128)
    return arch, grid
