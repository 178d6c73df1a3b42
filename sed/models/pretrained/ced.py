"""Pretrained weights for :class:`~sed.models.ced.CEDModel`: the original CED releases and the Hugging Face ports.

``build_ced_from_pretrained(source, num_classes=None, **overrides)`` takes as ``source``:

- an original release ``.pt`` (github.com/RicherMans/CED, ``AudioTransformer`` keys: ``init_bn.1.*``,
  ``patch_embed.proj.*``, ``time_pos_embed``, ``freq_pos_embed``, ``blocks.N.*``, ``norm.*``,
  ``outputlayer.{0,1}.*``, the torchaudio front-end buffers ``front_end.0.*``; optionally under ``model``);
- a Hugging Face directory (``config.json`` read as plain JSON + ``model.safetensors`` with
  ``encoder.*`` / ``outputlayer.*`` keys), a hub id, or a short name of :data:`CED_SHORT_NAMES`
  (``ced-tiny`` ... ``ced-base``, downloaded with ``huggingface_hub.snapshot_download``);
- a sed checkpoint of a CED model, or a ``CEDModel.state_dict()`` in memory.

The architecture comes from the weights' shapes (heads from ``config.json``, else the released size
of that width); ``overrides`` win (``input_tdim``, ``target_length``, ...). Positional embeddings
are cut or interpolated to the requested grid as the reference's ``change_pos_embedding`` does. A
head of another class count is re-initialised with a warning. Files are read only through
:func:`sed.checkpoint.read_checkpoint` (``weights_only`` / safetensors): no code is executed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from sed.data.audioset import audioset_labels
from sed.errors import CheckpointError, one_line
from sed.models import ced as ced_module
from sed.models.ced import CED_SIZES, CEDMel, adapt_freq_pos_embed, adapt_time_pos_embed
from sed.models.pretrained.sources import Importer, family_of, read_file, register_importer
from sed.models.registry import check_weights, checked_build, register_pretrained

__all__ = ["CED_SHORT_NAMES", "build_ced_from_pretrained", "download_ced", "to_sed_layout"]

log = logging.getLogger(__name__)

#: short name -> Hugging Face hub repository
CED_SHORT_NAMES = {f"ced-{s}": f"mispeech/ced-{s}" for s in ("tiny", "mini", "small", "base")}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FRONT_END = ("front_end.0.spectrogram.window", "front_end.0.mel_scale.fb")
_RENAMES = (("init_bn.1.", "init_bn."), ("patch_embed.proj.", "patch_embed."), ("outputlayer.", "head."))


def download_ced(repo_id: str, name: str | None = None) -> Path:
    """Snapshot of a hub CED (``config.json`` + safetensors) in the huggingface_hub cache."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["config.json", "*.safetensors"]))
    except Exception as err:  # noqa: BLE001 - offline, auth, missing repo: one line
        raise CheckpointError(name or repo_id, f"could not be downloaded from the Hugging Face hub "
                                               f"({repo_id}): {one_line(err, 120)}") from None


def _unwrap(obj) -> Mapping:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    return obj


def _claims_state(content: Mapping) -> bool:
    keys = set(_unwrap(content))
    return any(k.removeprefix("encoder.").removeprefix("module.") == "time_pos_embed" for k in keys) and any(
        k.removeprefix("encoder.").removeprefix("module.") == "freq_pos_embed" for k in keys)


def _claims_dir(path: Path) -> bool:
    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return cfg.get("model_type") == "ced" or any(str(a).startswith("Ced") for a in cfg.get("architectures") or [])


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
            k = "init_bn.1." + k[len("init_bn."):]
        for old, new in _RENAMES:
            if k.startswith(old):
                k = new + k[len(old):]
        out[k], names[k] = value, key
    return out, names


def _check_front_end(state: Mapping, n_mels: int, desc) -> None:
    ref = CEDMel(n_mels=n_mels, target_length=None)
    mine = {_FRONT_END[0]: ref.window, _FRONT_END[1]: ref.mel_fb}
    for key, want in mine.items():
        got = next((v for k, v in state.items() if k.removeprefix("module.") == key), None)
        if got is not None and (got.shape != want.shape or (got.float() - want).abs().max() > 1e-5):
            raise CheckpointError(desc, f"its front end ({key} {tuple(got.shape)}) differs from CED's "
                                        f"512-point, {n_mels}-mel front end")


def _arch(state: Mapping, desc, cfg: Mapping | None) -> dict:
    for k in ("time_pos_embed", "freq_pos_embed", "patch_embed.weight"):
        if k not in state:
            raise CheckpointError(desc, f"missing tensor {k!r} (not a CED checkpoint?)")
    tp, fp, w = state["time_pos_embed"], state["freq_pos_embed"], state["patch_embed.weight"]
    if tp.dim() != 4 or fp.dim() != 4 or w.dim() != 4 or 0 in w.shape:
        raise CheckpointError(desc, f"positional embeddings {tuple(tp.shape)}, {tuple(fp.shape)} are not CED's")
    d, p = tp.shape[1], w.shape[-1]
    depth = 1 + max((int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    heads = next((a["num_heads"] for a in CED_SIZES.values() if a["embed_dim"] == d), max(1, d // 64))
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    t0 = tp.shape[-1]
    arch = {"embed_dim": d, "depth": depth, "num_heads": heads, "patch_size": p,
            "mlp_ratio": fc1.shape[0] / d if fc1 is not None else 4.0, "qkv_bias": "blocks.0.attn.qkv.bias" in state,
            "num_mel_bins": fp.shape[-2] * p, "target_length": 1012 if t0 == 1012 // p else t0 * p}
    if "init_bn.weight" in state:
        arch["num_mel_bins"] = state["init_bn.weight"].shape[0]
    if "head.1.weight" in state:
        arch["num_classes"] = state["head.1.weight"].shape[0]
    if cfg:
        if cfg.get("pooling", "mean") != "mean":
            raise CheckpointError(desc, f"pooling {cfg.get('pooling')!r} is not supported (CED's released models pool by mean)")
        if cfg.get("patch_stride", p) != cfg.get("patch_size", p):
            raise CheckpointError(desc, "overlapping patches (patch_stride != patch_size) are not supported")
        for ours, theirs in (("num_heads", "num_heads"), ("target_length", "target_length"),
                             ("mlp_ratio", "mlp_ratio"), ("num_mel_bins", "n_mels")):
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


def _resolve(source):
    """(raw state, desc, config or None, labels or None, sed model kwargs) of any accepted source."""
    if isinstance(source, Mapping):
        return _unwrap(source), "<state dict>", None, None, {}
    if not isinstance(source, (str, os.PathLike)):
        raise CheckpointError(None, f"unsupported pretrained source of type {type(source).__name__}")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if not path.exists() and text in CED_SHORT_NAMES:
        path = download_ced(CED_SHORT_NAMES[text], text)
    elif not path.exists() and _HUB_ID.match(text) and not text.endswith((".pt", ".pth", ".safetensors")):
        path = download_ced(text)
    if path.is_dir():
        cfg_file = path / "config.json"
        try:
            cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CheckpointError(path, f"no readable config.json ({one_line(err)})") from None
        if not isinstance(cfg, dict) or not _claims_dir(path):
            raise CheckpointError(path, "its config.json does not describe a CED model (model_type 'ced')")
        weights = path / "model.safetensors"
        if not weights.is_file():
            weights = next(iter(sorted(path.glob("*.safetensors"))), path / "pytorch_model.bin")
        _, content = read_file(weights)
        n = cfg.get("outputdim", 527)
        return _unwrap(content), str(path), cfg, _hf_labels(cfg, n) if isinstance(n, int) else None, {}
    if not path.is_file():
        known = ", ".join(CED_SHORT_NAMES)
        raise CheckpointError(text, f"no such file, directory, hub id or CED short name (known: {known})")
    desc, content = read_file(path)
    if desc is not None:
        if not str(desc.get("model_name", "")).startswith("ced"):
            raise CheckpointError(path, f"holds a {desc.get('model_name')!r} model, not a CED")
        kwargs = {k: v for k, v in desc["model_kwargs"].items() if k not in ("labels", "num_classes")}
        return content, str(path), None, desc.get("labels") or None, kwargs
    return _unwrap(content), str(path), None, None, {}


def build_ced_from_pretrained(source, num_classes: int | None = None, *, factory=None, **overrides):
    """A :class:`~sed.models.ced.CEDModel` initialised from ``source`` (see the module docstring).

    ``num_classes=None`` keeps the source's head (its labels; sigmoid multi-label scores).
    ``factory``: the registered size to build (default: the one of the source's width).
    """
    raw, desc, cfg, labels, saved = _resolve(source)
    if not isinstance(raw, Mapping):
        raise CheckpointError(desc, f"not a state dict but a {type(raw).__name__}")
    if not _claims_state(raw):
        family = family_of(raw)
        if family not in (None, "ced"):
            raise CheckpointError(desc, f"is a {family} checkpoint, not a CED one")
        first = [str(k) for k in list(raw)[:5]]
        raise CheckpointError(desc, f"not a CED checkpoint (no time_pos_embed / freq_pos_embed); first keys {first}")
    state, names = to_sed_layout(raw)
    arch = {**_arch(state, desc, cfg), **saved}
    _check_front_end(raw, arch["num_mel_bins"], desc)
    if factory is None:
        size = next((n for n, a in CED_SIZES.items() if a["embed_dim"] == arch["embed_dim"]), "ced_base")
        factory = getattr(ced_module, size)
    src_nc = arch.pop("num_classes", None)
    if num_classes is None and overrides.get("labels") is not None:
        num_classes = len(overrides["labels"])
    keep_head = src_nc is not None and (num_classes is None or num_classes == src_nc)
    kwargs = {**arch, **overrides}
    if keep_head:
        num_classes = src_nc
        if overrides.get("labels") is None:
            labels = labels or (audioset_labels() if src_nc == 527 else None)
            kwargs["labels"] = labels
    with checked_build(desc, factory.__name__, state):
        model = factory(**kwargs) if num_classes is None else factory(num_classes=num_classes, **kwargs)

    notes = []
    f, t = model.num_mel_bins // model.patch_size, model.target_length // model.patch_size
    if state["time_pos_embed"].shape[-1] != t:
        notes.append(f"time_pos_embed: {state['time_pos_embed'].shape[-1]} -> {t} positions")
        state["time_pos_embed"] = adapt_time_pos_embed(state["time_pos_embed"], t)
    if state["freq_pos_embed"].shape[-2] != f:
        notes.append(f"freq_pos_embed: {state['freq_pos_embed'].shape[-2]} -> {f} positions")
        state["freq_pos_embed"] = adapt_freq_pos_embed(state["freq_pos_embed"], f)
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        what = f"{src_nc} -> {model.num_classes} classes" if src_nc is not None else "no head in the source"
        warnings.warn(f"{desc}: re-initialised the classifier head 'head' (LayerNorm + Linear; {what})", stacklevel=2)
    check_weights(model, state, desc)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [_source_name(k, raw) for k in missing if keep_head or not k.startswith("head.")]
    if missing or unexpected:
        parts = ([f"missing keys {missing[:5]}"] if missing else []) + (
            [f"unexpected keys {[names.get(k, k) for k in unexpected[:5]]}"] if unexpected else [])
        raise CheckpointError(desc, "does not fit the CED model: " + ", ".join(parts))
    model.multi_label = keep_head  # the released heads are sigmoid AudioSet taggers
    model.pretrained_report = {"source": desc, "format": "hf" if cfg else "original", "adapted": notes,
                               "reinitialised": [] if keep_head else ["head"]}
    log.info("loaded CED weights from %s (%s)", desc, "; ".join(notes) or "no adaptation")
    size = next((n for n in CED_SIZES if getattr(ced_module, n) is factory), factory.__name__)
    model.sed_config = {"name": size, "kwargs": model.sed_kwargs()}
    return model


def _source_name(key: str, raw: Mapping) -> str:
    """A ``CEDModel`` key in the source's own layout (for naming what the source lacks)."""
    hf = any(str(k).startswith("encoder.") for k in raw)
    for new, old in (("head.", "outputlayer."), ("patch_embed.", "patch_embed.proj."),
                     ("init_bn.", "init_bn." if hf else "init_bn.1.")):
        if key.startswith(new):
            key = old + key[len(new):]
            break
    return ("encoder." + key) if hf and not key.startswith("outputlayer.") else key


# ---------------------------------------------------------------------- registration
def _hook(factory, source, num_classes=None, **kwargs):
    return build_ced_from_pretrained(source, num_classes=num_classes, factory=factory, **kwargs)


for _size in CED_SIZES:
    register_pretrained(_size, _hook, default=_size.replace("_", "-"))

register_importer(Importer("ced", build_ced_from_pretrained, short_names=CED_SHORT_NAMES,
                           claims_state=_claims_state, claims_dir=_claims_dir))
