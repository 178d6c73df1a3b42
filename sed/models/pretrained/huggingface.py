"""Hugging Face AST checkpoints (transformers v4 or v5 key names): the key mapping and the architecture of a
config."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from sed.checkpoint import MAX_SAMPLE_RATE
from sed.errors import CheckpointError, short

_HF_V4 = [
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
]
_HF_V5 = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.distillation_token$", "dist_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^layers\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^layers\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.layernorm\.", "head.0."),
    (r"^classifier\.dense\.", "head.1."),
]
_QKV = re.compile(r"^layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$")


def from_hf(sd: Mapping, desc=None) -> dict:
    """transformers v4 (``encoder.layer.N.attention.attention.query``) or v5 (``layers.N.attention.q_proj``)
    keys -> sed keys; q, k, v are fused into timm's ``attn.qkv`` (rows q, k, v)."""
    state, qkv = {}, {}
    for key, v in sd.items():
        k = key.removeprefix("audio_spectrogram_transformer.")
        if k.startswith("encoder.layer."):
            k = "layers." + k[len("encoder.layer.") :]
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
            raise CheckpointError(desc, f"layer {i}: attention {kind} has only {sorted(parts)} of q, k, v")
        if len({(t.dim(), t.shape[1:], t.dtype) for t in parts.values()}) > 1 or parts["q"].dim() == 0:
            raise CheckpointError(
                desc,
                f"layer {i}: attention {kind} q, k, v of shapes "
                f"{[(tuple(parts[n].shape), parts[n].dtype) for n in 'qkv']} cannot be fused",
            )
        state[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return state


def _get(
    cfg: dict, key: str, default, kind: type, where: str, low: float | None = None, high: float | None = None
):
    """``cfg[key]`` (``default`` when absent); a CheckpointError naming ``where`` unless it is a
    ``kind`` (a float may be an int) within ``[low, high]``."""
    value = cfg.get(key, default)
    ok = isinstance(value, (int, float) if kind is float else kind) and (
        kind is bool or not isinstance(value, bool)
    )
    if ok and kind in (int, float):
        ok = math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        bounds = f" in [{low}, {high}]" if high is not None else f" >= {low}" if low is not None else ""
        raise CheckpointError(where, f"{key} is {short(value)}, not a {kind.__name__}{bounds}")
    return value


def hf_arch(cfg: dict, pre: dict | None, path) -> tuple[dict, tuple[int, int], list[str] | None]:
    """ASTModel kwargs, source grid and label names from a HF ``config.json`` (+ preprocessor config)."""
    where = f"{path}/config.json"
    if _get(cfg, "hidden_act", "gelu", str, where) != "gelu":
        raise CheckpointError(path, f"hidden_act {short(cfg['hidden_act'])} is not supported (AST uses gelu)")
    p = cfg.get("patch_size", 16)
    if isinstance(p, list) and len(p) == 2:
        if p[0] != p[-1]:
            raise CheckpointError(path, f"non-square patch_size {short(p)} is not supported")
        p = p[0]
    p = _get({"patch_size": p}, "patch_size", 16, int, where, 1)
    d, eps = _get(cfg, "hidden_size", 768, int, where, 1), _get(cfg, "layer_norm_eps", 1e-12, float, where, 0)
    arch = {
        "embed_dim": d,
        "depth": _get(cfg, "num_hidden_layers", 12, int, where, 1),
        "num_heads": _get(cfg, "num_attention_heads", 12, int, where, 1),
        "mlp_ratio": _get(cfg, "intermediate_size", 4 * d, int, where, 1) / d,
        "patch_size": p,
        "qkv_bias": _get(cfg, "qkv_bias", True, bool, where),
        "fstride": _get(cfg, "frequency_stride", 10, int, where, 1),
        "tstride": _get(cfg, "time_stride", 10, int, where, 1),
        "input_tdim": _get(cfg, "max_length", 1024, int, where, p),
        "input_fdim": _get(cfg, "num_mel_bins", 128, int, where, p),
        "block_eps": eps,
        "norm_eps": eps,
        "head_eps": eps,
        "drop_rate": _get(cfg, "hidden_dropout_prob", 0.0, float, where, 0, 1),
        "attn_drop_rate": _get(cfg, "attention_probs_dropout_prob", 0.0, float, where, 0, 1),
    }
    if pre is not None:
        where = f"{path}/preprocessor_config.json"
        arch.update(
            mean=_get(pre, "mean", -4.2677393, float, where),
            std=_get(pre, "std", 4.5689974, float, where),
            sample_rate=_get(pre, "sampling_rate", 16000, int, where, 1, MAX_SAMPLE_RATE),
        )
        if _get(pre, "do_normalize", True, bool, where) is False:
            arch.update(mean=0.0, std=0.5)  # (x - 0) / (2 * 0.5): no normalisation
    id2label = _get(cfg, "id2label", {}, dict, f"{path}/config.json")
    try:
        labels = [str(id2label[k]) for k in sorted(id2label, key=int)] or None
    except ValueError:
        raise CheckpointError(
            path, f"config.json: id2label keys {short(list(id2label))} are not class indices"
        ) from None
    if labels and all(re.fullmatch(r"LABEL_\d+", s) for s in labels):
        labels = None
    grid = ((arch["input_fdim"] - p) // arch["fstride"] + 1, (arch["input_tdim"] - p) // arch["tstride"] + 1)
    return arch, grid, labels
