"""CED's public weights onto :class:`~sed.models.ced.CEDModel`: the original releases and the Hugging Face
ports.

- an original release ``.pt`` (github.com/RicherMans/CED, ``AudioTransformer`` keys: ``init_bn.1.*``,
  ``patch_embed.proj.*``, ``time_pos_embed``, ``freq_pos_embed``, ``blocks.N.*``, ``norm.*``,
  ``outputlayer.{0,1}.*``, the torchaudio front-end buffers ``front_end.0.*``; optionally under ``model``);
- a Hugging Face port directory (``config.json`` read as plain JSON + ``model.safetensors`` with
  ``encoder.*`` / ``outputlayer.*`` keys), a hub id, or a short name (``ced-tiny`` ... ``ced-base``).

The architecture comes from the weights' shapes (heads from ``config.json``, else the released size of
that width). Positional embeddings are cut or interpolated to the model's grid as the reference's
``change_pos_embedding`` does. Front-end buffers are checked against :class:`~sed.models.ced.CEDMel` and
dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from sed.data.corpora.audioset import audioset_labels
from sed.errors import CheckpointError
from sed.models.ced import CED_SIZES, CEDMel, adapt_freq_pos_embed, adapt_time_pos_embed
from sed.models.pretrained.build import Arch, Importer, sed_arch
from sed.models.pretrained.sources import Contents

__all__ = ["IMPORTER", "to_sed_layout"]

_FRONT_END = ("front_end.0.spectrogram.window", "front_end.0.mel_scale.fb")
_RENAMES = (("init_bn.1.", "init_bn."), ("patch_embed.proj.", "patch_embed."), ("outputlayer.", "head."))


def _unwrap(obj) -> Mapping:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    return obj


def claims(contents: Contents) -> bool:
    if contents.config is not None:
        cfg = contents.config
        return cfg.get("model_type") == "ced" or any(
            str(a).startswith("Ced") for a in cfg.get("architectures") or []
        )
    keys = {str(k).removeprefix("encoder.").removeprefix("module.") for k in _unwrap(contents.state)}
    return {"time_pos_embed", "freq_pos_embed"} <= keys


def to_sed_layout(state: Mapping) -> tuple[dict, dict]:
    """Original or Hugging Face CED keys -> (``CEDModel`` keys -> tensors, sed key -> source key).
    Front-end buffers are checked against :class:`~sed.models.ced.CEDMel` and dropped."""
    out, names = {}, {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        k = key.removeprefix("module.").removeprefix("encoder.")
        if k in _FRONT_END:
            continue
        if k.startswith("init_bn.") and not k.startswith("init_bn.1."):  # Hugging Face: BatchNorm2d itself
            k = "init_bn.1." + k[len("init_bn.") :]
        for old, new in _RENAMES:
            if k.startswith(old):
                k = new + k[len(old) :]
        out[k], names[k] = value, key
    return out, names


def _check_front_end(state: Mapping, n_mels: int, desc) -> None:
    ref = CEDMel(n_mels=n_mels, target_length=None)
    mine = {_FRONT_END[0]: ref.window, _FRONT_END[1]: ref.mel_fb}
    for key, want in mine.items():
        got = next((v for k, v in state.items() if k.removeprefix("module.") == key), None)
        if got is not None and (got.shape != want.shape or (got.float() - want).abs().max() > 1e-5):
            raise CheckpointError(
                desc,
                f"its front end ({key} {tuple(got.shape)}) differs from CED's "
                f"512-point, {n_mels}-mel front end",
            )


def _arch(state: Mapping, desc, cfg: Mapping | None) -> dict:
    for k in ("time_pos_embed", "freq_pos_embed", "patch_embed.weight"):
        if k not in state:
            raise CheckpointError(desc, f"missing tensor {k!r} (not a CED checkpoint?)")
    tp, fp, w = state["time_pos_embed"], state["freq_pos_embed"], state["patch_embed.weight"]
    if tp.dim() != 4 or fp.dim() != 4 or w.dim() != 4 or 0 in w.shape:
        raise CheckpointError(
            desc, f"positional embeddings {tuple(tp.shape)}, {tuple(fp.shape)} are not CED's"
        )
    d, p = tp.shape[1], w.shape[-1]
    depth = 1 + max((int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    heads = next((a["num_heads"] for a in CED_SIZES.values() if a["embed_dim"] == d), max(1, d // 64))
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    t0 = tp.shape[-1]
    arch = {
        "embed_dim": d,
        "depth": depth,
        "num_heads": heads,
        "patch_size": p,
        "mlp_ratio": fc1.shape[0] / d if fc1 is not None else 4.0,
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "num_mel_bins": fp.shape[-2] * p,
        "target_length": 1012 if t0 == 1012 // p else t0 * p,
    }
    if "init_bn.weight" in state:
        arch["num_mel_bins"] = state["init_bn.weight"].shape[0]
    if "head.1.weight" in state:
        arch["num_classes"] = state["head.1.weight"].shape[0]
    if cfg:
        if cfg.get("pooling", "mean") != "mean":
            raise CheckpointError(
                desc, f"pooling {cfg.get('pooling')!r} is not supported (CED's released models pool by mean)"
            )
        if cfg.get("patch_stride", p) != cfg.get("patch_size", p):
            raise CheckpointError(desc, "overlapping patches (patch_stride != patch_size) are not supported")
        for ours, theirs in (
            ("num_heads", "num_heads"),
            ("target_length", "target_length"),
            ("mlp_ratio", "mlp_ratio"),
            ("num_mel_bins", "n_mels"),
        ):
            if isinstance(cfg.get(theirs), int | float) and not isinstance(cfg.get(theirs), bool):
                arch[ours] = type(arch[ours])(cfg[theirs])
        if isinstance(cfg.get("pad_last"), bool):
            arch["pad_last"] = cfg["pad_last"]
    return arch


def _hf_labels(cfg: Mapping, n: int) -> list[str] | None:
    """``id2label`` of a config; the ports' AudioSet names are cut at the first comma, so a 527-class
    table that matches the AudioSet ontology that way gets the full names."""
    table = cfg.get("id2label")
    if not isinstance(table, Mapping):
        return None
    try:
        names = [str(table.get(str(i), table.get(i))) for i in range(n)]
    except (TypeError, ValueError):
        return None
    if n == 527 and all(a == b.split(",")[0].replace('"', "") for a, b in zip(names, audioset_labels())):
        return audioset_labels()
    return None if "None" in names else names


def arch_from(contents: Contents, state: dict[str, torch.Tensor]) -> Arch:
    if contents.sed is not None:
        return sed_arch(contents)
    arch = _arch(state, contents.desc, contents.config)
    n = arch.pop("num_classes", None)
    labels = _hf_labels(contents.config, n) if contents.config and isinstance(n, int) else None
    size = next((k for k, a in CED_SIZES.items() if a["embed_dim"] == arch["embed_dim"]), "ced_base")
    if contents.config is not None:  # the port mean-pools the tokens of all chunks, then one head
        arch["chunk_average"] = "embedding"
    return Arch(size, arch, n, labels, True if n else None, "hf" if contents.config else "original")


def map_keys(contents: Contents) -> tuple[dict[str, torch.Tensor], list[str]]:
    raw = _unwrap(contents.state)
    state, _ = to_sed_layout(raw)
    n_mels = (
        state["init_bn.weight"].shape[0]
        if "init_bn.weight" in state
        else _arch(state, contents.desc, None)["num_mel_bins"]
    )
    _check_front_end(raw, n_mels, contents.desc)
    return state, [k for k in raw if str(k).removeprefix("module.") in _FRONT_END]


def adapt(state: dict, model, arch: Arch) -> list[str]:
    """The positional embeddings cut or interpolated to the model's grid (``change_pos_embedding``)."""
    notes = []
    f, t = model.num_mel_bins // model.patch_size, model.target_length // model.patch_size
    if "time_pos_embed" in state and state["time_pos_embed"].shape[-1] != t:
        notes.append(f"time_pos_embed: {state['time_pos_embed'].shape[-1]} -> {t} positions")
        state["time_pos_embed"] = adapt_time_pos_embed(state["time_pos_embed"], t)
    if "freq_pos_embed" in state and state["freq_pos_embed"].shape[-2] != f:
        notes.append(f"freq_pos_embed: {state['freq_pos_embed'].shape[-2]} -> {f} positions")
        state["freq_pos_embed"] = adapt_freq_pos_embed(state["freq_pos_embed"], f)
    return notes


def source_key(key: str, contents: Contents) -> str:
    """A ``CEDModel`` key in the source's own layout (for naming what the source lacks)."""
    if contents.sed is not None:
        return key
    hf = any(str(k).startswith("encoder.") for k in _unwrap(contents.state))
    for new, old in (
        ("head.", "outputlayer."),
        ("patch_embed.", "patch_embed.proj."),
        ("init_bn.", "init_bn." if hf else "init_bn.1."),
    ):
        if key.startswith(new):
            key = old + key[len(new) :]
            break
    return ("encoder." + key) if hf and not key.startswith("outputlayer.") else key


IMPORTER = Importer(
    "ced",
    "CED",
    "a CED checkpoint (original or Hugging Face: no time_pos_embed / freq_pos_embed)",
    claims,
    arch_from,
    map_keys,
    head_what="LayerNorm + Linear; ",
    adapt=adapt,
    source_key=source_key,
)
