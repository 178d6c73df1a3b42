"""Pretrained weights for :class:`~sed.models.beats.BEATsModel`: the BEATs release ``.pt`` files.

A release file (microsoft/unilm ``beats/``) is a dict ``{"cfg": {...}, "model": state_dict}`` (+
``"label_dict"``: AudioSet mid -> predictor row, in the fine-tuned ones), read with
``torch.load(weights_only=True)`` (:func:`~sed.models.pretrained.sources.read_foreign`). The
architecture comes from ``cfg`` (the reference's ``BEATsConfig`` defaults where a key is absent);
the key layout maps onto sed's names:

============================================================  ==============================================
reference                                                      sed
============================================================  ==============================================
``patch_embedding.*``, ``layer_norm.*``, ``post_extract_proj.*``  the same
``encoder.pos_conv.0.weight_g`` / ``weight_v`` / ``bias``      ``pos_conv.parametrizations.weight.original0`` /
                                                               ``original1`` / ``pos_conv.bias``
``encoder.layer_norm.*``                                       ``encoder_norm.*``
``encoder.layers.0.self_attn.relative_attention_bias.weight``  ``rel_pos_bias.weight`` (shared by all layers; the
                                                               copies under the other layers are dropped)
``encoder.layers.N.*``                                         ``blocks.N.*``
``predictor.*``                                                ``head.1.*``
============================================================  ==============================================

A fine-tuned AudioSet predictor is re-ordered so that output ``i`` is class ``i`` of the AudioSet ontology
table (:func:`sed.data.audioset.audioset_labels`, the AST order); its labels and the multi-label flag come
with it. Short names (:data:`SHORT_NAMES`) download from public Hugging Face mirrors of the release (the
official links are not scriptable).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping

import torch

from sed.data.audioset import audioset_labels, audioset_mids
from sed.errors import CheckpointError, one_line, short
from sed.models import beats as beats_module
from sed.models.pretrained.sources import Importer, family_of, read_foreign, register_importer
from sed.models.registry import check_weights, checked_build, register_pretrained

__all__ = ["SHORT_NAMES", "beats_kwargs", "build_beats_from_pretrained", "download_file", "from_reference",
           "is_beats_release", "to_reference"]

log = logging.getLogger(__name__)

OFFICIAL = "https://github.com/microsoft/unilm/tree/master/beats"

#: short name -> (Hugging Face mirror repo, file) tried in order (the next one only when a file is absent)
SHORT_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "beats-iter3-plus-as2m": (("lpepino/beats_ckpts", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt1.pt"),
                              ("camenduru/beats", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt")),
    "beats-iter3-plus-as2m-cpt2": (("camenduru/beats", "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"),),
    "beats-iter3-plus-as2m-pt": (("lpepino/beats_ckpts", "BEATs_iter3_plus_AS2M.pt"),),
    "beats-iter3-as2m": (("lpepino/beats_ckpts", "BEATs_iter3_finetuned_on_AS2M_cpt1.pt"),),
    "beats-iter3-pt": (("lpepino/beats_ckpts", "BEATs_iter3.pt"),),
}

#: the reference BEATsConfig defaults (used where a file's cfg leaves a key out) -> sed kwarg names
_CFG = {  # cfg key: (sed kwarg or None, default)
    "input_patch_size": ("patch_size", -1), "embed_dim": ("patch_dim", 512), "conv_bias": ("conv_bias", False),
    "encoder_layers": ("depth", 12), "encoder_embed_dim": ("embed_dim", 768),
    "encoder_ffn_embed_dim": ("ffn_dim", 3072), "encoder_attention_heads": ("num_heads", 12),
    "deep_norm": ("deep_norm", False), "dropout": ("dropout", 0.1), "attention_dropout": ("attention_dropout", 0.1),
    "activation_dropout": ("activation_dropout", 0.0), "dropout_input": ("dropout_input", 0.0),
    "conv_pos": ("conv_pos", 128), "conv_pos_groups": ("conv_pos_groups", 16), "num_buckets": ("num_buckets", 320),
    "max_distance": ("max_distance", 1280), "gru_rel_pos": ("gru_rel_pos", False),
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
    for ref, ours in (("encoder.pos_conv.0.weight_g", "pos_conv.parametrizations.weight.original0"),
                      ("encoder.pos_conv.0.weight_v", "pos_conv.parametrizations.weight.original1"),
                      ("encoder.pos_conv.0.parametrizations.weight.original", "pos_conv.parametrizations.weight.original"),
                      ("encoder.pos_conv.0.", "pos_conv."), ("encoder.layer_norm.", "encoder_norm."),
                      ("encoder.layers.", "blocks."), ("predictor.", "head.1.")):
        if key.startswith(ref):
            return ours + key[len(ref):]
    return key


def to_reference(key: str) -> str:
    """The reference name of a sed parameter (how missing keys are reported)."""
    for ours, ref in (("rel_pos_bias.weight", "encoder.layers.0.self_attn.relative_attention_bias.weight"),
                      ("pos_conv.parametrizations.weight.original0", "encoder.pos_conv.0.weight_g"),
                      ("pos_conv.parametrizations.weight.original1", "encoder.pos_conv.0.weight_v"),
                      ("pos_conv.", "encoder.pos_conv.0."), ("encoder_norm.", "encoder.layer_norm."),
                      ("blocks.", "encoder.layers."), ("head.1.", "predictor.")):
        if key.startswith(ours):
            return ref + key[len(ours):]
    return key


def is_beats_release(content) -> bool:
    """Whether loaded contents are a BEATs release file (``cfg`` + ``model`` with BEATs' key names)."""
    if not isinstance(content, Mapping) or not isinstance(content.get("cfg"), Mapping):
        return False
    model = content.get("model")
    return isinstance(model, Mapping) and "patch_embedding.weight" in model and any(
        str(k).startswith("encoder.layers.") for k in model)


# ---------------------------------------------------------------------- reading a source
def download_file(repo_id: str, filename: str) -> str:
    """``hf_hub_download`` into the huggingface_hub cache (the test hook for short names)."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, filename)


def _download(name: str) -> str:
    errors = []
    for repo, filename in SHORT_NAMES[name]:
        try:
            return download_file(repo, filename)
        except Exception as err:  # noqa: BLE001 - offline, missing file, hub error: one line below
            if type(err).__name__ not in ("EntryNotFoundError", "RepositoryNotFoundError", "RemoteEntryNotFoundError"):
                raise CheckpointError(name, f"could not be downloaded from huggingface.co/{repo} ({one_line(err, 120)}); "
                                            f"download {filename} from {OFFICIAL} and pass its path") from None
            errors.append(f"{repo}/{filename}")
    raise CheckpointError(name, f"could not be downloaded (not found: {', '.join(errors)}); download it from "
                                f"{OFFICIAL} and pass its path")


def _read(source) -> tuple[Mapping, str]:
    """(contents, description) of a source: a short name, a file or an in-memory release dict."""
    if isinstance(source, Mapping):
        return source, "<BEATs checkpoint>"
    if not isinstance(source, (str, os.PathLike)):
        raise CheckpointError(None, f"unsupported pretrained source of type {type(source).__name__}")
    text = os.fspath(source)
    if text in SHORT_NAMES:
        path = _download(text)
        return read_foreign(path), f"{text} ({os.path.basename(path)})"
    if not os.path.isfile(os.path.expanduser(text)):
        known = ", ".join(SHORT_NAMES)
        raise CheckpointError(text, f"no such file, and not a BEATs short name ({known})")
    return read_foreign(os.path.expanduser(text)), text


def beats_kwargs(cfg: Mapping, desc: str) -> dict:
    """:class:`~sed.models.beats.BEATsModel` kwargs of a release ``cfg`` (a CheckpointError when it asks for a
    variant this model does not implement)."""
    get = {k: cfg.get(k, default) for k, (_, default) in _CFG.items()}
    if cfg.get("activation_fn", "gelu") != "gelu":
        raise CheckpointError(desc, f"activation_fn {short(cfg.get('activation_fn'))} is not supported (gelu only)")
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


def _labels(label_dict, n: int, desc: str) -> tuple[list[int] | None, list[str] | None]:
    """(row order that puts the predictor in the AudioSet ontology order, labels) of a ``label_dict``."""
    if not isinstance(label_dict, Mapping) or len(label_dict) != n:
        return None, None
    rows = {str(k): v for k, v in label_dict.items()}
    if sorted(v for v in rows.values() if isinstance(v, int)) != list(range(n)):
        raise CheckpointError(desc, f"label_dict does not map {n} labels onto predictor rows 0..{n - 1}")
    mids = audioset_mids()
    if set(rows) == set(mids):
        return [rows[m] for m in mids], audioset_labels()
    names = dict(zip(mids, audioset_labels()))
    by_row = sorted(rows, key=rows.get)
    return None, [names.get(m, m) for m in by_row]


# ---------------------------------------------------------------------- build
def build_beats_from_pretrained(source, num_classes: int | None = None, *, factory=None, **overrides):
    """A :class:`~sed.models.beats.BEATsModel` from a BEATs release file, its contents, or a short name.

    ``num_classes=None`` keeps the fine-tuned predictor (with its AudioSet labels, multi-label); another
    count, or a pretrained-only file, gives a new head (with a warning). ``overrides`` are BEATsModel
    kwargs (``input_tdim``: BEATs takes any length, so no weight is adapted)."""
    content, desc = _read(source)
    if not is_beats_release(content):
        family = family_of(content)
        what = f"a {family} checkpoint" if family else "not a BEATs release file (a dict with cfg and model)"
        raise CheckpointError(desc, f"is {what}, not a BEATs one" if family else f"is {what}")
    cfg, ref_state = content["cfg"], content["model"]
    kwargs = beats_kwargs(cfg, desc)
    src_nc = None
    if cfg.get("finetuned_model", False) or "predictor.weight" in ref_state:
        w = ref_state.get("predictor.weight")
        src_nc = int(w.shape[0]) if isinstance(w, torch.Tensor) and w.dim() == 2 else int(cfg.get("predictor_class", 527))
    order, labels = _labels(content.get("label_dict"), src_nc, desc) if src_nc else (None, None)
    user_labels = overrides.get("labels")
    if num_classes is None and user_labels is not None:
        num_classes = len(user_labels)
    keep_head = src_nc is not None and (num_classes is None or num_classes == src_nc)
    kwargs.update(overrides)
    if keep_head:
        num_classes = src_nc
        if user_labels is None and labels is not None:
            kwargs["labels"] = labels
    factory = factory or getattr(beats_module, _size_of(kwargs))
    state, dropped = {}, []
    for key, value in ref_state.items():
        if not isinstance(value, torch.Tensor):
            continue
        name = from_reference(str(key))
        if name is None:
            dropped.append(str(key))
        elif keep_head or not name.startswith("head."):
            state[name] = value
    with checked_build(desc, factory.__name__, state):
        model = factory(**kwargs) if num_classes is None else factory(num_classes=num_classes, **kwargs)
    expected = set(model.state_dict())
    missing = [to_reference(k) for k in model.state_dict() if k not in state and (keep_head or not k.startswith("head."))]
    extra = [k for k in ref_state if (n := from_reference(str(k))) is not None and n not in expected
             and (keep_head or not n.startswith("head."))]
    if missing or extra:
        parts = ([f"missing keys {missing[:5]}"] if missing else []) + ([f"unexpected keys {extra[:5]}"] if extra else [])
        raise CheckpointError(desc, "does not fit the BEATs model: " + ", ".join(parts))
    if order is not None and keep_head:
        idx = torch.as_tensor(order)
        state["head.1.weight"], state["head.1.bias"] = state["head.1.weight"][idx], state["head.1.bias"][idx]
    check_weights(model, state, desc)
    model.load_state_dict(state, strict=False)
    reinit = [] if keep_head else ["head"]
    if reinit:
        what = f"{src_nc} -> {model.num_classes} classes" if src_nc else "no predictor in the source"
        warnings.warn(f"{desc}: re-initialised the classifier head 'head' ({what})", stacklevel=2)
    model.multi_label = bool(keep_head)  # the BEATs predictor is a sigmoid (AudioSet) tagger
    model.pretrained_report = {"source": desc, "format": "beats", "dropped": dropped, "reinitialised": reinit,
                               "adapted": ["predictor rows: label_dict -> AudioSet ontology order"] if order else []}
    log.info("loaded BEATs weights from %s", desc)
    model.sed_config = {"name": factory.__name__, "kwargs": model.sed_kwargs()}
    return model


def _size_of(kwargs: Mapping) -> str:
    for name, arch in beats_module.BEATS_SIZES.items():
        if all(kwargs.get(k) == v for k, v in arch.items()):
            return name
    return "beats_iter3"  # kwargs carry the whole architecture, so any size rebuilds it


# ---------------------------------------------------------------------- registration
def _hook(factory, source, num_classes=None, **kwargs):
    return build_beats_from_pretrained(source, num_classes=num_classes, factory=factory, **kwargs)


register_pretrained("beats_iter3", _hook, default="beats-iter3-plus-as2m")
register_pretrained("beats_micro", _hook)
register_importer(Importer("beats", build_beats_from_pretrained, short_names=SHORT_NAMES,
                           claims_state=is_beats_release))
