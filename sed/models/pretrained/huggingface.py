"""Hugging Face AST checkpoints: a local directory (transformers v4 or v5 key names), a hub id or a short name."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from sed.errors import CheckpointError
from sed.models.pretrained.common import SC_STATS, Source, load_state_file

#: short name -> (hub id, source defaults used when the download lacks them).
HF_SHORT_NAMES: dict[str, tuple[str, dict]] = {
    "ast-audioset-0.4593": ("MIT/ast-finetuned-audioset-10-10-0.4593", {}),
    "ast-audioset-0.450": ("MIT/ast-finetuned-audioset-10-10-0.450", {}),
    "ast-audioset-0.448": ("MIT/ast-finetuned-audioset-10-10-0.448", {}),
    "ast-audioset-0.448-v2": ("MIT/ast-finetuned-audioset-10-10-0.448-v2", {}),
    "ast-audioset-12-12-0.447": ("MIT/ast-finetuned-audioset-12-12-0.447", {}),
    "ast-audioset-14-14-0.443": ("MIT/ast-finetuned-audioset-14-14-0.443", {}),
    "ast-audioset-16-16-0.442": ("MIT/ast-finetuned-audioset-16-16-0.442", {}),
    "ast-speech-commands-v2": ("MIT/ast-finetuned-speech-commands-v2", {**SC_STATS, "input_tdim": 128}),
}

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


def hf_dir(path: Path, defaults: dict | None = None) -> Source:
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
    return Source("hf", state, arch, grid, str(path), labels)


def download_hf(repo_id: str) -> Path:
    """Snapshot of a hub AST (config, preprocessor config, weights) into the huggingface_hub cache."""
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"]))
        if not any(path.glob("*.safetensors")):
            path = Path(snapshot_download(repo_id, allow_patterns=["*.json", "pytorch_model.bin"]))
    except Exception as err:  # network, auth, missing repo: one clear line
        raise CheckpointError(repo_id, f"cannot download from the Hugging Face hub: {err}") from None
    return path
