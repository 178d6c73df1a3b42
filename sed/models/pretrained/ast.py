"""AST's public weights onto :class:`~sed.models.ast.ASTModel` (spec ``ast-patchmix-icbhi.md`` §1.2, §1.4).

Formats (the sniffer, :func:`detect_format`):

- an original AST ``.pth`` (``module.v.*`` + ``module.mlp_head.*``; strides from a name like
  ``audioset_10_10_0.4593.pth``), a bare ``ASTModel.state_dict()``, or a Patch-Mix ``best.pth``
  (``model``: ``v.*``, and ``classifier``: the trained LayerNorm + Linear head, which replaces the
  model's unused ``mlp_head``; its pickled ``args`` are read as plain data);
- a Hugging Face AST directory (transformers v4 or v5 key names; config.json + preprocessor_config.json),
  a hub id or a short name such as ``ast-audioset-0.4593``;
- timm ImageNet DeiT (``deit_base_distilled_patch16_384`` ...; a file or the short name): RGB patch
  weights summed, its ImageNet heads dropped (a new head, never a warning).

The architecture comes from the source where it defines one (widths, strides, grid, statistics); the
positional embedding is adapted to the model's grid (:func:`~sed.models.ast.adapt_pos_embed`;
``patchmix_pos_quirk=True`` reproduces Patch-Mix's swapped build, spec §2.2).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

import torch

from sed.errors import CheckpointError, one_line, short
from sed.models.ast import AST_SIZES, adapt_pos_embed, default_num_heads
from sed.models.pretrained import huggingface, original
from sed.models.pretrained.build import Arch, Importer, sed_arch
from sed.models.pretrained.sources import Contents

__all__ = ["IMPORTER", "SC_STATS", "detect_format", "infer_arch"]

#: Speech Commands V2 fbank statistics of the AST recipe (the AudioSet ones are the model default).
SC_STATS = {"mean": -6.845978, "std": 5.5654526}


# ---------------------------------------------------------------------- formats and shapes
def unwrap_state(obj, desc) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded file (``state_dict``/``model`` wrappers, ``module.`` prefix)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(desc, f"not a state dict but a {type(obj).__name__}")
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
    """``state[key]``, a CheckpointError naming ``desc`` unless it is there with ``dims`` non-empty
    dimensions."""
    if key not in state:
        raise CheckpointError(desc, f"missing tensor {key!r}")
    t = state[key]
    if t.dim() != dims or 0 in t.shape:
        raise CheckpointError(desc, f"{key} of shape {tuple(t.shape)} is not a {dims}-d weight")
    return t


def detect_format(sd: Mapping, desc) -> str:
    """``hf`` (transformers v4/v5 names), ``original`` (AST ``v.*``), ``deit`` (timm) or ``sed``."""
    if any(
        k.startswith(("audio_spectrogram_transformer.", "classifier.dense.", "embeddings.patch_")) for k in sd
    ):
        return "hf"
    if any(k.startswith("v.") for k in sd):
        return "original"
    if {"pos_embed", "patch_embed.proj.weight", "dist_token"} <= set(sd):
        w = sd["patch_embed.proj.weight"]
        return "deit" if (w.dim() == 4 and w.shape[1] != 1) or "head_dist.weight" in sd else "sed"
    raise CheckpointError(
        desc, "not an AST checkpoint (original, Hugging Face, sed) nor a distilled DeiT state dict"
    )


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
    raise CheckpointError(
        desc,
        f"cannot tell the patch grid of a pos_embed with {n} patch tokens; "
        "name the file <dataset>_<fstride>_<tstride>_<score>.pth",
    )


def infer_arch(state: Mapping, desc, *, strides=None, deit: bool = False, hf_eps: bool = False):
    """ASTModel kwargs readable from tensor shapes (heads by width: DeiT's rule) and the source grid."""
    d = tensor_of(state, "cls_token", 3, desc).shape[-1]
    pe, w = tensor_of(state, "pos_embed", 3, desc), tensor_of(state, "patch_embed.proj.weight", 4, desc)
    fc1 = tensor_of(state, "blocks.0.mlp.fc1.weight", 2, desc)
    depth = 1 + max(int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    arch = {
        "embed_dim": d,
        "depth": depth,
        "num_heads": default_num_heads(d),
        "mlp_ratio": fc1.shape[0] / d,
        "patch_size": w.shape[-1],
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
    }
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


# ---------------------------------------------------------------------- the importer's three steps
def _kind(contents: Contents) -> str:
    return (
        "hf"
        if contents.config is not None
        else detect_format(unwrap_state(contents.state, contents.desc), contents.desc)
    )


def claims(contents: Contents) -> bool:
    if contents.config is not None:
        return contents.config.get("model_type") == "audio-spectrogram-transformer"
    try:
        _kind(contents)
    except CheckpointError:
        return False
    return True


def map_keys(contents: Contents) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Source keys -> sed keys: transformers names, original ``v.*``, or DeiT without its heads and with
    the RGB patch weights summed into one input channel."""
    kind = _kind(contents)
    sd = unwrap_state(contents.state, contents.desc)
    if kind == "hf":
        return huggingface.from_hf(sd, contents.desc), []
    if kind == "deit":
        state = {k: v for k, v in sd.items() if not k.startswith(("head.", "head_dist."))}
        w = state.get("patch_embed.proj.weight")
        if w is not None and w.dim() == 4 and w.shape[1] != 1:
            state["patch_embed.proj.weight"] = w.sum(dim=1, keepdim=True)
        return state, sorted(set(sd) - set(state))
    state, dropped = original.from_original(sd) if kind == "original" else (dict(sd), [])
    trained = contents.state.get("classifier") if isinstance(contents.state, Mapping) else None
    if isinstance(trained, Mapping) and {"0.weight", "1.weight"} <= set(trained):
        # a Patch-Mix best.pth: the head it trained and evaluated is "classifier" (LayerNorm + Linear, spec
        # section 2); the model's own mlp_head stays at its initial values, unused
        dropped += sorted(k for k in state if k.startswith("head."))
        state = {
            **{k: v for k, v in state.items() if not k.startswith("head.")},
            **{f"head.{k}": v for k, v in trained.items() if isinstance(v, torch.Tensor)},
        }
    return state, dropped


def _size(arch: dict) -> str:
    return next((n for n, a in AST_SIZES.items() if a["embed_dim"] == arch["embed_dim"]), "ast_base")


def arch_from(contents: Contents, state: dict[str, torch.Tensor]) -> Arch:
    desc = contents.desc
    if contents.sed is not None:
        kwargs = dict(contents.sed["model_kwargs"])
        shapes, grid = infer_arch(
            contents.state, desc, strides=(kwargs.get("fstride", 10), kwargs.get("tstride", 10))
        )
        arch = sed_arch(contents)
        arch.kwargs = {**{k: v for k, v in shapes.items() if k != "num_classes"}, **arch.kwargs}
        arch.extra["grid"] = grid
        return arch
    kind = _kind(contents)
    labels = None
    if contents.config is not None:
        arch, grid, labels = huggingface.hf_arch(contents.config, contents.preprocessor, contents.desc)
        if "head.1.weight" in state:
            arch["num_classes"] = tensor_of(state, "head.1.weight", 2, desc).shape[0]
        labels = labels if labels is not None and len(labels) == arch.get("num_classes") else None
    elif kind == "hf":
        arch, grid = infer_arch(state, desc, hf_eps=True)
    else:
        arch, grid = infer_arch(
            state,
            desc,
            deit=kind == "deit",
            strides=None if kind == "deit" else original.strides_from_name(contents.filename),
        )
        if os.path.basename(contents.filename or "").lower().startswith("speechcommands"):
            arch.update(SC_STATS)
    n = arch.pop("num_classes", None)
    return Arch(_size(arch), arch, n, labels, None, kind, fresh_head=kind == "deit", extra={"grid": grid})


def adapt(state: dict, model, arch: Arch, patchmix_pos_quirk: bool = False) -> list[str]:
    """The positional embedding adapted from the source's grid to the model's (spec §1.2); with
    ``patchmix_pos_quirk``, Patch-Mix's swapped build (adapted as ``t x f``, consumed as ``f x t``)."""
    notes = []
    dst = model.grid
    if patchmix_pos_quirk:
        p, (fs, ts) = model.patch_embed.proj.kernel_size[0], model.patch_embed.proj.stride
        dst = ((model.input_tdim - p) // fs + 1, (model.input_fdim - p) // ts + 1)
        if dst[0] * dst[1] != model.num_patches:
            raise ValueError("patchmix_pos_quirk needs equal frequency and time strides")
    src = tuple(arch.extra["grid"])
    if "pos_embed" in state and (src != tuple(dst) or patchmix_pos_quirk):
        try:
            state["pos_embed"] = adapt_pos_embed(state["pos_embed"], src, dst)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"cannot adapt its pos_embed: {one_line(err)}") from None
        notes.append(f"pos_embed: grid {src[0]}x{src[1]} -> {dst[0]}x{dst[1]}")
    if arch.kind == "deit":
        notes.append("patch_embed: summed 3 input channels")
    return notes


IMPORTER = Importer(
    "ast",
    "AST",
    "an AST checkpoint (original, Hugging Face, sed) nor a distilled DeiT state dict",
    claims,
    arch_from,
    map_keys,
    head_what="head.0 LayerNorm, head.1 Linear; ",
    adapt=adapt,
    options=("patchmix_pos_quirk",),
)


def build_ast_from_pretrained(source, num_classes: int | None = None, *, factory=None, **overrides):
    """An :class:`~sed.models.ast.ASTModel` from any AST source (see the module docstring)."""
    return IMPORTER.build(source, num_classes, factory=factory, **overrides)
