"""Pretrained weights for :class:`~sed.models.beats.BEATsModel`: the BEATs release ``.pt`` files.

A release file (microsoft/unilm ``beats/``) is a dict ``{"cfg": {...}, "model": state_dict}`` (+
``"label_dict"`` in the fine-tuned ones: predictor row (int) -> AudioSet mid, read by the BEATs README as
``checkpoint['label_dict'][label_idx.item()]``), read with ``torch.load(weights_only=True``). The
architecture comes from ``cfg`` (the reference's ``BEATsConfig`` defaults where a key is absent);
the key layout maps onto sed's names:

============================================================  ==============================================
reference                                                      sed
============================================================  ==============================================
``patch_embedding.*``, ``layer_norm.*``, ``post_extract_proj.*``  the same
``encoder.pos_conv.0.weight_g`` / ``weight_v`` / ``bias``      ``pos_conv.parametrizations.weight.original0``
                                                               / ``original1`` / ``pos_conv.bias``
``encoder.layer_norm.*``                                       ``encoder_norm.*``
``encoder.layers.0.self_attn.relative_attention_bias.weight``  ``rel_pos_bias.weight`` (shared by all layers;
                                                               the copies under the other layers are dropped)
``encoder.layers.N.*``                                         ``blocks.N.*``
``predictor.*``                                                ``head.1.*``
============================================================  ==============================================

A fine-tuned AudioSet predictor is re-ordered so that output ``i`` is class ``i`` of the AudioSet ontology
table (:func:`sed.data.corpora.audioset.audioset_labels`, the AST order); its labels and the multi-label flag
come with it. A ``label_dict`` whose mids are not all AudioSet's keeps the predictor order, named by the mids.
Only the ``{row: mid}`` form is read: no public release uses the inverse. The short names (declared in
:mod:`sed.models.beats`) download from public Hugging Face mirrors (the official links are not scriptable).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from sed.data.corpora.audioset import audioset_labels, audioset_mids
from sed.errors import CheckpointError, short
from sed.models.beats import BEATS_SIZES
from sed.models.pretrained.build import Arch, Importer, sed_arch
from sed.models.pretrained.sources import Contents

__all__ = ["IMPORTER", "beats_kwargs", "from_reference", "is_beats_release", "to_reference"]

#: the reference BEATsConfig defaults (used where a file's cfg leaves a key out) -> sed kwarg names
_CFG = {  # cfg key: (sed kwarg or None, default)
    "input_patch_size": ("patch_size", -1),
    "embed_dim": ("patch_dim", 512),
    "conv_bias": ("conv_bias", False),
    "encoder_layers": ("depth", 12),
    "encoder_embed_dim": ("embed_dim", 768),
    "encoder_ffn_embed_dim": ("ffn_dim", 3072),
    "encoder_attention_heads": ("num_heads", 12),
    "deep_norm": ("deep_norm", False),
    "dropout": ("dropout", 0.1),
    "attention_dropout": ("attention_dropout", 0.1),
    "activation_dropout": ("activation_dropout", 0.0),
    "dropout_input": ("dropout_input", 0.0),
    "conv_pos": ("conv_pos", 128),
    "conv_pos_groups": ("conv_pos_groups", 16),
    "num_buckets": ("num_buckets", 320),
    "max_distance": ("max_distance", 1280),
    "gru_rel_pos": ("gru_rel_pos", False),
    "predictor_dropout": ("predictor_dropout", 0.1),
}
_BOOL = {"conv_bias", "deep_norm", "gru_rel_pos"}
_FLOAT = {"dropout", "attention_dropout", "activation_dropout", "dropout_input", "predictor_dropout"}
_BIAS = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight")


# ---------------------------------------------------------------------- the key layout
def from_reference(key: str) -> str | None:
    """sed name of a reference key (None: a shared copy of the relative bias under layer N > 0)."""
    if m := _BIAS.fullmatch(key):
        return "rel_pos_bias.weight" if m[1] == "0" else None
    for ref, ours in (
        ("encoder.pos_conv.0.weight_g", "pos_conv.parametrizations.weight.original0"),
        ("encoder.pos_conv.0.weight_v", "pos_conv.parametrizations.weight.original1"),
        ("encoder.pos_conv.0.parametrizations.weight.original", "pos_conv.parametrizations.weight.original"),
        ("encoder.pos_conv.0.", "pos_conv."),
        ("encoder.layer_norm.", "encoder_norm."),
        ("encoder.layers.", "blocks."),
        ("predictor.", "head.1."),
    ):
        if key.startswith(ref):
            return ours + key[len(ref) :]
    return key


def to_reference(key: str) -> str:
    """The reference name of a sed parameter (how missing keys are reported)."""
    for ours, ref in (
        ("rel_pos_bias.weight", "encoder.layers.0.self_attn.relative_attention_bias.weight"),
        ("pos_conv.parametrizations.weight.original0", "encoder.pos_conv.0.weight_g"),
        ("pos_conv.parametrizations.weight.original1", "encoder.pos_conv.0.weight_v"),
        ("pos_conv.", "encoder.pos_conv.0."),
        ("encoder_norm.", "encoder.layer_norm."),
        ("blocks.", "encoder.layers."),
        ("head.1.", "predictor."),
    ):
        if key.startswith(ours):
            return ref + key[len(ours) :]
    return key


def is_beats_release(content) -> bool:
    """Whether loaded contents are a BEATs release file (``cfg`` + ``model`` with BEATs' key names)."""
    if not isinstance(content, Mapping) or not isinstance(content.get("cfg"), Mapping):
        return False
    model = content.get("model")
    return (
        isinstance(model, Mapping)
        and "patch_embedding.weight" in model
        and any(str(k).startswith("encoder.layers.") for k in model)
    )


def beats_kwargs(cfg: Mapping, desc: str) -> dict:
    """:class:`~sed.models.beats.BEATsModel` kwargs of a release ``cfg`` (a CheckpointError when it asks for a
    variant this model does not implement)."""
    get = {k: cfg.get(k, default) for k, (_, default) in _CFG.items()}
    if cfg.get("activation_fn", "gelu") != "gelu":
        raise CheckpointError(
            desc, f"activation_fn {short(cfg.get('activation_fn'))} is not supported (gelu only)"
        )
    if cfg.get("layer_norm_first", False):
        raise CheckpointError(desc, "layer_norm_first=True (pre-LN) BEATs is not supported")
    if not cfg.get("relative_position_embedding", False):
        raise CheckpointError(desc, "BEATs without relative_position_embedding is not supported")
    out = {}
    for key, value in get.items():
        name = _CFG[key][0]
        if name in _BOOL:
            ok = isinstance(value, bool | int) and value in (0, 1)
            value = bool(value)
        elif name in _FLOAT:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value < 1.0
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        if not ok:
            raise CheckpointError(desc, f"cfg {key}={short(value)} is not a valid value")
        out[name] = value
    return out


def label_order(label_dict, n: int, desc: str) -> tuple[list[int] | None, list[str] | None]:
    """(predictor rows in AudioSet ontology order, labels) of a release ``label_dict`` ``{row: mid}``;
    ``(None, names by row)`` when its mids are not the AudioSet ontology; ``(None, None)`` without one."""
    if label_dict is None:
        return None, None
    rows = label_dict if isinstance(label_dict, Mapping) else {}
    ok = len(rows) == n and all(
        isinstance(k, int) and not isinstance(k, bool) and isinstance(v, str) for k, v in rows.items()
    )
    if not ok or sorted(rows) != list(range(n)):
        raise CheckpointError(
            desc,
            f"label_dict is not {{predictor row: AudioSet mid}} for rows 0..{n - 1} "
            f"(found {short(dict(list(rows.items())[:3]) if rows else label_dict)})",
        )
    mids = audioset_mids()
    if sorted(rows.values()) == sorted(mids):
        by_mid = {mid: row for row, mid in rows.items()}
        return [by_mid[m] for m in mids], audioset_labels()
    names = dict(zip(mids, audioset_labels()))
    return None, [names.get(rows[r], rows[r]) for r in range(n)]


def _head_rows(contents: Contents) -> int | None:
    cfg, model = contents.state["cfg"], contents.state["model"]
    if not (cfg.get("finetuned_model", False) or "predictor.weight" in model):
        return None
    w = model.get("predictor.weight")
    return (
        int(w.shape[0])
        if isinstance(w, torch.Tensor) and w.dim() == 2
        else int(cfg.get("predictor_class", 527))
    )


def arch_from(contents: Contents, state: dict[str, torch.Tensor]) -> Arch:
    if contents.sed is not None:
        return sed_arch(contents)
    kwargs = beats_kwargs(contents.state["cfg"], contents.desc)
    size = next(
        (n for n, a in BEATS_SIZES.items() if all(kwargs.get(k) == v for k, v in a.items())), "beats_iter3"
    )
    n = _head_rows(contents)
    labels = label_order(contents.state.get("label_dict"), n, contents.desc)[1] if n else None
    return Arch(size, kwargs, n, labels, True if n else None, "beats")


def map_keys(contents: Contents) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference keys -> sed keys (the per-layer copies of the shared bias dropped), the predictor rows put
    in the AudioSet ontology order when the ``label_dict`` allows."""
    state, dropped = {}, []
    for key, value in contents.state["model"].items():
        if not isinstance(value, torch.Tensor):
            continue
        name = from_reference(str(key))
        if name is None:
            dropped.append(str(key))
        else:
            state[name] = value
    n = _head_rows(contents)
    order = label_order(contents.state.get("label_dict"), n, contents.desc)[0] if n else None
    if order is not None and {"head.1.weight", "head.1.bias"} <= set(state):
        idx = torch.as_tensor(order)
        state["head.1.weight"], state["head.1.bias"] = state["head.1.weight"][idx], state["head.1.bias"][idx]
    return state, dropped


IMPORTER = Importer(
    "beats",
    "BEATs",
    "a BEATs release file (a dict with cfg and model)",
    lambda c: is_beats_release(c.state),
    arch_from,
    map_keys,
    source_key=lambda key, c: key if c.sed is not None else to_reference(key),
)
