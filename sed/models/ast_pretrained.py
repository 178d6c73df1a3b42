"""Pretrained weights for :class:`~sed.models.ast.ASTModel` (spec ``ast-patchmix-icbhi.md`` §1.2, §1.4).

``build_ast_from_pretrained(source, num_classes=None, **overrides)`` takes as ``source``:

- timm ImageNet DeiT: a name (``deit_base_distilled_patch16_384``, downloaded by timm), or its
  state dict as a file or an in-memory dict: RGB patch weights summed, ``head``/``head_dist`` dropped;
- an original AST ``.pth`` (``module.v.*`` + ``module.mlp_head.*``; strides from a name like
  ``audioset_10_10_0.4593.pth``), a Patch-Mix ``v.*`` dict, or a bare ``ASTModel.state_dict()``;
- a Hugging Face AST directory (transformers v4 or v5 key names), a hub id or a short name of
  :data:`HF_SHORT_NAMES` (downloaded with ``huggingface_hub.snapshot_download``).

The architecture comes from the source where it defines one; ``overrides`` win. The positional
embedding is adapted to the requested grid (:func:`~sed.models.ast.adapt_pos_embed`); a head of
another class count is re-initialised with a warning. Files are read only with
``torch.load(weights_only=True)`` or safetensors: a file that needs arbitrary unpickling is refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sed.errors import CheckpointError
from sed.models import ast as ast_module
from sed.models.ast import adapt_pos_embed, default_num_heads

__all__ = ["DEIT_NAMES", "HF_SHORT_NAMES", "adapt_pos_embed", "build_ast_from_pretrained", "resolve_source"]

log = logging.getLogger(__name__)

_SC_STATS = {"mean": -6.845978, "std": 5.5654526}

#: short name -> (hub id, source defaults used when the download lacks them).
HF_SHORT_NAMES: dict[str, tuple[str, dict]] = {
    "ast-audioset-0.4593": ("MIT/ast-finetuned-audioset-10-10-0.4593", {}),
    "ast-audioset-0.450": ("MIT/ast-finetuned-audioset-10-10-0.450", {}),
    "ast-audioset-0.448": ("MIT/ast-finetuned-audioset-10-10-0.448", {}),
    "ast-audioset-0.448-v2": ("MIT/ast-finetuned-audioset-10-10-0.448-v2", {}),
    "ast-audioset-12-12-0.447": ("MIT/ast-finetuned-audioset-12-12-0.447", {}),
    "ast-audioset-14-14-0.443": ("MIT/ast-finetuned-audioset-14-14-0.443", {}),
    "ast-audioset-16-16-0.442": ("MIT/ast-finetuned-audioset-16-16-0.442", {}),
    "ast-speech-commands-v2": ("MIT/ast-finetuned-speech-commands-v2", {**_SC_STATS, "input_tdim": 128}),
}

#: timm ImageNet DeiT (distilled: cls + dist tokens) that AST can start from.
DEIT_NAMES = ("deit_base_distilled_patch16_384", "deit_base_distilled_patch16_224",
              "deit_small_distilled_patch16_224", "deit_tiny_distilled_patch16_224")

_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_ORIGINAL_NAME = re.compile(r"(?:^|_)(\d+)_(\d+)_\d+\.\d+\.pth$")  # audioset_10_10_0.4593.pth


@dataclass
class _Source:
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
    from sed.checkpoint import read_checkpoint

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


def detect_format(sd: Mapping, desc) -> str:
    """``hf`` (transformers v4/v5 names), ``original`` (AST ``v.*``), ``deit`` (timm) or ``sed``."""
    if any(k.startswith(("audio_spectrogram_transformer.", "classifier.dense.", "embeddings.patch_")) for k in sd):
        return "hf"
    if any(k.startswith("v.") for k in sd):
        return "original"
    if {"pos_embed", "patch_embed.proj.weight", "dist_token"} <= set(sd):
        three = sd["patch_embed.proj.weight"].shape[1] != 1
        return "deit" if three or "head_dist.weight" in sd else "sed"
    raise CheckpointError(desc, "not an AST checkpoint (original, Hugging Face, sed) nor a distilled DeiT state dict")


def from_original(sd: Mapping) -> tuple[dict, list[str]]:
    """Original AST keys (``v.*``, ``mlp_head.*``) -> sed keys; the DeiT heads are dropped."""
    state, dropped = {}, []
    for k, v in sd.items():
        if k.startswith(("v.head.", "v.head_dist.")):
            dropped.append(k)
        elif k.startswith("v."):
            state[k[2:]] = v
        elif k.startswith("mlp_head."):
            state["head." + k[len("mlp_head."):]] = v
        else:
            state[k] = v  # reported as unexpected
    return state, dropped


_HF_V4 = [(".attention.attention.query.", ".attention.q_proj."), (".attention.attention.key.", ".attention.k_proj."),
          (".attention.attention.value.", ".attention.v_proj."), (".attention.output.dense.", ".attention.o_proj."),
          (".intermediate.dense.", ".mlp.fc1."), (".output.dense.", ".mlp.fc2.")]
_HF_V5 = [(r"^embeddings\.cls_token$", "cls_token"), (r"^embeddings\.distillation_token$", "dist_token"),
          (r"^embeddings\.position_embeddings$", "pos_embed"),
          (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
          (r"^layers\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
          (r"^layers\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
          (r"^layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
          (r"^layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."), (r"^layernorm\.", "norm."),
          (r"^classifier\.layernorm\.", "head.0."), (r"^classifier\.dense\.", "head.1.")]
_QKV = re.compile(r"^layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$")


def from_hf(sd: Mapping) -> dict:
    """transformers v4 (``encoder.layer.N.attention.attention.query``) or v5 (``layers.N.attention.q_proj``)
    keys -> sed keys; q, k, v are fused into timm's ``attn.qkv`` (rows q, k, v)."""
    state, qkv = {}, {}
    for key, v in sd.items():
        k = key.removeprefix("audio_spectrogram_transformer.")
        if k.startswith("encoder.layer."):
            k = "layers." + k[len("encoder.layer."):]
            for a, b in _HF_V4:
                k = k.replace(a, b)
        if m := _QKV.match(k):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = v
            continue
        for pat, rep in _HF_V5:
            new, n = re.subn(pat, rep, k)
            if n:
                k = new
                break
        state[k] = v
    for (i, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(None, f"layer {i}: attention {kind} has only {sorted(parts)} of q, k, v")
        state[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return state


def _guess_grid(n: int, p: int, strides, desc, fdim: int = 128):
    """(fstride, tstride, input_tdim, (f, t)) of an AST pos_embed with ``n`` patch tokens."""
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
    try:
        d, pe, w = state["cls_token"].shape[-1], state["pos_embed"], state["patch_embed.proj.weight"]
        fc1 = state["blocks.0.mlp.fc1.weight"]
    except KeyError as err:
        raise CheckpointError(desc, f"missing tensor {err}") from None
    depth = 1 + max(int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    arch = {"embed_dim": d, "depth": depth, "num_heads": default_num_heads(d), "mlp_ratio": fc1.shape[0] / d,
            "patch_size": w.shape[-1], "qkv_bias": "blocks.0.attn.qkv.bias" in state}
    if "head.1.weight" in state:
        arch["num_classes"] = state["head.1.weight"].shape[0]
    if hf_eps:
        arch.update(block_eps=1e-12, norm_eps=1e-12, head_eps=1e-12)
    n = pe.shape[1] - 2
    if deit:
        g = math.isqrt(n)
        if g * g != n:
            raise CheckpointError(desc, f"DeiT pos_embed with {n} patch tokens is not a square grid")
        return arch, (g, g)
    fs, ts, tdim, grid = _guess_grid(n, arch["patch_size"], strides, desc)
    arch.update(fstride=fs, tstride=ts, input_tdim=tdim, input_fdim=128)
    return arch, grid


def hf_arch(cfg: dict, pre: dict | None, path) -> tuple[dict, tuple[int, int], list[str] | None]:
    """ASTModel kwargs, source grid and label names from a HF ``config.json`` (+ preprocessor config)."""
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(path, f"hidden_act {cfg['hidden_act']!r} is not supported (AST uses gelu)")
    p = cfg.get("patch_size", 16)
    if isinstance(p, (list, tuple)):
        if p[0] != p[-1]:
            raise CheckpointError(path, f"non-square patch_size {p} is not supported")
        p = p[0]
    d, eps = cfg.get("hidden_size", 768), cfg.get("layer_norm_eps", 1e-12)
    arch = {
        "embed_dim": d, "depth": cfg.get("num_hidden_layers", 12), "num_heads": cfg.get("num_attention_heads", 12),
        "mlp_ratio": cfg.get("intermediate_size", 4 * d) / d, "patch_size": p, "qkv_bias": cfg.get("qkv_bias", True),
        "fstride": cfg.get("frequency_stride", 10), "tstride": cfg.get("time_stride", 10),
        "input_tdim": cfg.get("max_length", 1024), "input_fdim": cfg.get("num_mel_bins", 128),
        "block_eps": eps, "norm_eps": eps, "head_eps": eps,
        "drop_rate": cfg.get("hidden_dropout_prob", 0.0), "attn_drop_rate": cfg.get("attention_probs_dropout_prob", 0.0),
    }
    if pre is not None:
        arch.update(mean=pre.get("mean", -4.2677393), std=pre.get("std", 4.5689974),
                    sample_rate=pre.get("sampling_rate", 16000))
        if pre.get("do_normalize", True) is False:
            arch.update(mean=0.0, std=0.5)  # (x - 0) / (2 * 0.5): no normalisation
    id2label = cfg.get("id2label") or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)] or None
    if labels and all(re.fullmatch(r"LABEL_\d+", s) for s in labels):
        labels = None
    grid = ((arch["input_fdim"] - p) // arch["fstride"] + 1, (arch["input_tdim"] - p) // arch["tstride"] + 1)
    return arch, grid, labels


# ---------------------------------------------------------------------- sources
def _hf_dir(path: Path, defaults: dict | None = None) -> _Source:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(path, "not a Hugging Face AST directory (no config.json)")
    pre_file = path / "preprocessor_config.json"
    try:
        cfg, pre = json.loads(cfg_file.read_text()), json.loads(pre_file.read_text()) if pre_file.is_file() else None
    except (OSError, ValueError) as err:
        raise CheckpointError(path, f"cannot read the model config: {err}") from None
    if cfg.get("model_type") != "audio-spectrogram-transformer":
        raise CheckpointError(path, f"model_type {cfg.get('model_type')!r} is not an AST")
    weights = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()]
    if not weights:
        raise CheckpointError(path, "no model.safetensors or pytorch_model.bin")
    state = from_hf(load_state_file(weights[0]))
    arch, grid, labels = hf_arch(cfg, pre, path)
    if "head.1.weight" in state:
        arch["num_classes"] = state["head.1.weight"].shape[0]
    if labels is not None and len(labels) != arch.get("num_classes"):
        labels = None
    arch = {**(defaults or {}), **arch}  # the download's own config and preprocessor config win
    return _Source("hf", state, arch, grid, str(path), labels)


def _download_hf(repo_id: str) -> Path:
    """Snapshot of a hub AST (config, preprocessor config, weights) into the huggingface_hub cache."""
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"]))
        if not any(path.glob("*.safetensors")):
            path = Path(snapshot_download(repo_id, allow_patterns=["*.json", "pytorch_model.bin"]))
    except Exception as err:  # network, auth, missing repo: one clear line
        raise CheckpointError(repo_id, f"cannot download from the Hugging Face hub: {err}") from None
    return path


def _deit_by_name(name: str) -> dict:
    import timm

    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as err:
        raise CheckpointError(name, f"cannot get the timm ImageNet weights: {err}") from None


def _from_state(sd: Mapping, desc: str, filename: str | None = None) -> _Source:
    kind = detect_format(sd, desc)
    if kind == "hf":
        state = from_hf(sd)
        return _Source("hf", state, *infer_arch(state, desc, hf_eps=True), desc)
    if kind == "deit":
        state = {k: v for k, v in sd.items() if not k.startswith(("head.", "head_dist."))}
        dropped = sorted(set(sd) - set(state))
        return _Source("deit", state, *infer_arch(state, desc, deit=True), desc, None, dropped)
    state, dropped = from_original(sd) if kind == "original" else (dict(sd), [])
    strides = None
    if filename and (m := _ORIGINAL_NAME.search(os.path.basename(filename))):
        strides = int(m.group(1)), int(m.group(2))
    arch, grid = infer_arch(state, desc, strides=strides)
    if filename and os.path.basename(filename).lower().startswith("speechcommands"):
        arch.update(_SC_STATS)
    return _Source(kind, state, arch, grid, desc, None, dropped)


def _from_sed(desc: dict, state: dict, where: str) -> _Source:
    """A sed checkpoint (e.g. one written by training) as the starting point of another model."""
    if not str(desc.get("model_name", "")).startswith("ast"):
        raise CheckpointError(where, f"holds a {desc.get('model_name')!r} model, not an AST")
    kwargs = dict(desc["model_kwargs"])
    labels = kwargs.pop("labels", None) or desc.get("labels") or None
    arch, grid = infer_arch(state, where, strides=(kwargs.get("fstride", 10), kwargs.get("tstride", 10)))
    arch.update(kwargs)
    return _Source("sed", dict(state), arch, grid, where, labels)


def resolve_source(source) -> _Source:
    """Any accepted ``source`` -> sed-layout tensors + architecture + positional grid."""
    if isinstance(source, Mapping):
        return _from_state(unwrap_state(source, "<state dict>"), "<state dict>")
    if not isinstance(source, (str, os.PathLike)):
        raise CheckpointError(None, f"unsupported pretrained source of type {type(source).__name__}")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return _hf_dir(path)
    if path.is_file():
        from sed.checkpoint import read_checkpoint

        desc, content = read_checkpoint(path)
        if desc is not None:
            return _from_sed(desc, content, str(path))
        return _from_state(unwrap_state(content, path), str(path), filename=str(path))
    if text in HF_SHORT_NAMES:
        repo, defaults = HF_SHORT_NAMES[text]
        return _hf_dir(_download_hf(repo), defaults)
    name = text.split("timm/", 1)[-1]
    if name in DEIT_NAMES or name == "vit_deit_base_distilled_patch16_384":
        name = name.removeprefix("vit_")
        return _from_state(_deit_by_name(name), name)
    if text.lower().endswith(_FILE_SUFFIXES):
        raise CheckpointError(text, "no such file")
    if _HUB_ID.match(text):
        defaults = next((d for r, d in HF_SHORT_NAMES.values() if r == text), None)
        return _hf_dir(_download_hf(text), defaults)
    known = ", ".join([*HF_SHORT_NAMES, *DEIT_NAMES])
    raise CheckpointError(text, f"unknown pretrained source (not a file, directory, hub id or one of: {known})")


# ---------------------------------------------------------------------- build
def build_ast_from_pretrained(
    source,
    num_classes: int | None = None,
    *,
    factory=None,
    patchmix_pos_quirk: bool = False,
    **overrides,
):
    """An :class:`~sed.models.ast.ASTModel` initialised from ``source`` (see the module docstring).

    ``num_classes=None`` keeps the source's head (and its label names). ``factory`` is the
    registered size function to build with (default: the size matching the source width).
    ``patchmix_pos_quirk=True`` reproduces Patch-Mix's swapped positional-embedding build
    (spec §2.2: adapted as a ``t x f`` grid, consumed as ``f x t``); off by default.
    Other keyword arguments override ``ASTModel`` arguments (``input_tdim``, ``fstride``, ...).
    """
    src = resolve_source(source)
    if factory is None:
        name = next((n for n, a in ast_module.AST_SIZES.items() if a["embed_dim"] == src.arch["embed_dim"]), "ast_base")
        factory = getattr(ast_module, name)
    src_nc = src.arch.pop("num_classes", None)
    user_labels = overrides.get("labels")
    if num_classes is None and user_labels is not None:
        num_classes = len(user_labels)
    keep_head = src_nc is not None and (num_classes is None or num_classes == src_nc)
    kwargs = {**src.arch, **overrides}
    if keep_head:
        num_classes = src_nc
        if user_labels is None and src.labels is not None:
            kwargs["labels"] = src.labels
    model = factory(**kwargs) if num_classes is None else factory(num_classes=num_classes, **kwargs)

    state = {k: v for k, v in src.state.items() if keep_head or not k.startswith("head.")}
    notes = []
    w = state["patch_embed.proj.weight"]
    if w.dim() == 4 and w.shape[1] != 1:
        state["patch_embed.proj.weight"] = w.sum(dim=1, keepdim=True)
        notes.append(f"patch_embed: summed {w.shape[1]} input channels")
    dst_grid = model.grid
    if patchmix_pos_quirk:
        p, (fs, ts) = model.patch_embed.proj.kernel_size[0], model.patch_embed.proj.stride
        dst_grid = ((model.input_tdim - p) // fs + 1, (model.input_fdim - p) // ts + 1)
        if dst_grid[0] * dst_grid[1] != model.num_patches:
            raise ValueError("patchmix_pos_quirk needs equal frequency and time strides")
    if tuple(src.grid) != tuple(dst_grid) or patchmix_pos_quirk:
        state["pos_embed"] = adapt_pos_embed(state["pos_embed"], src.grid, dst_grid)
        notes.append(f"pos_embed: grid {src.grid[0]}x{src.grid[1]} -> {dst_grid[0]}x{dst_grid[1]}")

    reinit = [] if keep_head or src.kind == "deit" else ["head"]  # a DeiT head is always new: no warning
    if reinit:
        what = f"{src_nc} -> {model.num_classes} classes" if src_nc is not None else "no head in the source"
        warnings.warn(f"{src.desc}: re-initialised the classifier head 'head' (head.0 LayerNorm, "
                      f"head.1 Linear; {what})", stacklevel=2)

    expected = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
             for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise CheckpointError(src.desc, "shape mismatch: " + "; ".join(wrong[:6]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if keep_head or not k.startswith("head.")]
    if missing or unexpected:
        parts = ([f"missing keys {missing[:8]}"] if missing else []) + (
            [f"unexpected keys {unexpected[:8]}"] if unexpected else [])
        raise CheckpointError(src.desc, "does not fit the AST model: " + ", ".join(parts))
    model.pretrained_report = {
        "source": src.desc, "format": src.kind, "dropped": src.dropped,
        "reinitialised": reinit, "adapted": notes,
    }
    log.info("loaded %s AST weights from %s (%s)", src.kind, src.desc, "; ".join(notes) or "no adaptation")
    size = next((n for n in ast_module.AST_SIZES if getattr(ast_module, n) is factory), factory.__name__)
    model.sed_config = {"name": size, "kwargs": model.sed_kwargs()}
    return model
