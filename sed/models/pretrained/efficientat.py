"""EfficientAT's release checkpoints (github.com/fschmid56/EfficientAT, ``models/mn/model.py``).

A release ``.pt`` (e.g. ``mn10_as_mAP_471.pt``) is a bare ``state_dict`` of the reference ``MN`` model:
``features.0`` (stem), ``features.1..15`` (inverted residual blocks, squeeze-and-excitation under
``block.N.conc_se_layers.0``), ``features.16`` (last 1x1 conv) and ``classifier.2`` / ``classifier.5``
(the "mlp" head's Linears). :func:`build_efficientat_from_pretrained` maps it onto
:class:`~sed.models.efficientat.EfficientATModel` (the width comes from the last conv), with the 527
AudioSet names and the multi-label flag for an AudioSet head. Short names ``efficientat-mn{04,05,10,20,30,
40}-as`` download the release files from the official URLs into the torch hub cache
(``torch.hub.download_url_to_file``). Files are read with ``weights_only`` loading only.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from sed.data.audioset import audioset_labels
from sed.errors import CheckpointError, one_line
from sed.models import efficientat as effat
from sed.models.pretrained.sources import Importer, family_of, read_file, read_foreign, register_importer
from sed.models.registry import check_weights, checked_build, register_pretrained

__all__ = ["RELEASE_URL", "SHORT_NAMES", "build_efficientat_from_pretrained", "fetch_release", "from_reference"]

log = logging.getLogger(__name__)

RELEASE_URL = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/"
#: short name -> (registered size, release file). AudioSet mAP in the file name.
SHORT_NAMES: dict[str, tuple[str, str]] = {
    "efficientat-mn04-as": ("efficientat_mn04", "mn04_as_mAP_432.pt"),
    "efficientat-mn05-as": ("efficientat_mn05", "mn05_as_mAP_443.pt"),
    "efficientat-mn10-as": ("efficientat_mn10", "mn10_as_mAP_471.pt"),
    "efficientat-mn20-as": ("efficientat_mn20", "mn20_as_mAP_478.pt"),
    "efficientat-mn30-as": ("efficientat_mn30", "mn30_as_mAP_482.pt"),
    "efficientat-mn40-as": ("efficientat_mn40", "mn40_as_mAP_484.pt"),
}
_OTHER_WIDTHS = (0.1, 0.2, 0.6, 0.8, 1.2, 1.4, 1.6)  # the reference's other mnXX widths
_NUM_BLOCKS = len(effat.block_settings(1.0))


def fetch_release(name: str) -> Path:
    """The release file of short name ``name`` in the torch hub cache, downloaded when absent."""
    filename = SHORT_NAMES[name][1]
    dst = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if dst.is_file():
        return dst
    url = RELEASE_URL + filename
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dst), progress=True)
    except Exception as e:  # noqa: BLE001 - offline, proxy, HTTP errors: all one line for the user
        raise CheckpointError(name, f"could not be downloaded from {url} ({one_line(e)})") from None
    return dst


def claims_state(content: Mapping) -> bool:
    return "features.0.0.weight" in content and "features.1.block.0.0.weight" in content and any(
        str(k).startswith("classifier.") for k in content)


def _rename(key: str) -> str | None:
    """A reference key -> the sed key, or None where it has no place in the model."""
    m = re.match(r"features\.(\d+)\.(.+)$", key)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        rest = rest.replace(".conc_se_layers.0.", ".")
        if i == 0:
            return "stem." + rest
        if i <= _NUM_BLOCKS:
            return f"blocks.{i - 1}.{rest}"
        return "last_conv." + rest if i == _NUM_BLOCKS + 1 else None
    m = re.match(r"classifier\.([25])\.(weight|bias)$", key)
    return f"head.{0 if m.group(1) == '2' else 3}.{m.group(2)}" if m else None


def from_reference(state: Mapping) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference-named tensors -> (sed-named tensors, the keys that have no place in the model)."""
    out, extra = {}, []
    for k, v in state.items():
        new = _rename(str(k)) if isinstance(v, torch.Tensor) else None
        if new is None:
            extra.append(str(k))
        else:
            out[new] = v
    return out, extra


def _size_of(state: Mapping, desc: str) -> tuple[str, dict]:
    """The registered size (and width override) whose last conv is as wide as the file's."""
    w = state.get("last_conv.0.weight")
    if not isinstance(w, torch.Tensor) or w.dim() != 4:
        raise CheckpointError(desc, "does not fit EfficientAT: missing keys ['features.16.0.weight']")
    width = int(w.shape[0])
    for name, arch in effat.EFFICIENTAT_SIZES.items():
        if 6 * effat.block_settings(arch["width_mult"])[-1][3] == width:
            return name, {}
    for mult in _OTHER_WIDTHS:
        if 6 * effat.block_settings(mult)[-1][3] == width:
            return "efficientat_mn10", {"width_mult": mult}
    raise CheckpointError(desc, f"its last conv has {width} channels, no EfficientAT width gives that")


def _read(source) -> tuple[Mapping, str, dict | None]:
    """(content, description of the source, sed description if it is a sed checkpoint)."""
    if isinstance(source, Mapping):
        return source, "<state dict>", None
    if not isinstance(source, (str, os.PathLike)):
        raise CheckpointError(None, f"unsupported pretrained source of type {type(source).__name__}")
    text = os.fspath(source)
    if text in SHORT_NAMES:
        path = fetch_release(text)
        return read_foreign(path), text, None
    path = Path(text).expanduser()
    if not path.is_file():
        known = ", ".join(SHORT_NAMES)
        raise CheckpointError(text, f"no such file, and not an EfficientAT short name ({known})")
    desc, content = read_file(path)
    return content, str(path), desc


def build_efficientat_from_pretrained(source, num_classes: int | None = None, *, factory=None, **overrides):
    """An :class:`~sed.models.efficientat.EfficientATModel` from a release ``.pt`` (file, in-memory
    state dict or short name) or a sed EfficientAT checkpoint. ``num_classes=None`` keeps the
    source's head (and, for 527 classes, the AudioSet names and multi-label scores); another count
    re-initialises the last Linear ``head.3`` only, as the reference does. ``overrides`` are
    ``EfficientATModel`` arguments (``input_tdim``, ``num_mel_bins``, ``hop_size``, ...)."""
    content, desc, sed_desc = _read(source)
    labels, multi = None, None
    if sed_desc is not None:
        name = str(sed_desc.get("model_name", ""))
        if not name.startswith("efficientat_"):
            raise CheckpointError(desc, f"holds a {name!r} model, not an EfficientAT one")
        state, extra = dict(content), []
        kwargs = dict(sed_desc.get("model_kwargs") or {})
        labels = kwargs.pop("labels", None) or sed_desc.get("labels") or None
        multi = sed_desc.get("multi_label")
        arch = {k: v for k, v in kwargs.items() if k != "num_classes"}
        size = name
    else:
        family = family_of(content)
        if family not in (None, "efficientat"):
            raise CheckpointError(desc, f"is a {family} checkpoint, not an EfficientAT one")
        state, extra = from_reference(content)
        if not state:
            raise CheckpointError(desc, f"is not an EfficientAT checkpoint: unexpected keys {extra[:5]}")
        size, arch = _size_of(state, desc)
    if factory is None:
        factory = getattr(effat, size)
    bias = state.get("head.3.bias")
    src_nc = int(bias.shape[0]) if isinstance(bias, torch.Tensor) and bias.dim() == 1 else None
    if sed_desc is None and src_nc == 527:
        labels, multi = audioset_labels(), True
    user_labels = overrides.get("labels")
    if num_classes is None and user_labels is not None:
        num_classes = len(user_labels)
    keep_head = src_nc is not None and (num_classes is None or num_classes == src_nc)
    kwargs = {**arch, **overrides}
    if keep_head:
        num_classes = src_nc
        if user_labels is None and labels is not None:
            kwargs["labels"] = labels
    with checked_build(desc, factory.__name__, state):
        model = factory(**kwargs) if num_classes is None else factory(num_classes=num_classes, **kwargs)
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.3.")}
        warnings.warn(f"{desc}: re-initialised the last classifier layer 'head.3' "
                      f"({src_nc} -> {model.num_classes} classes)", stacklevel=2)
    check_weights(model, state, desc)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if keep_head or not k.startswith("head.3.")]
    if missing or unexpected or extra:
        parts = ([f"missing keys {missing[:5]}"] if missing else []) + (
            [f"unexpected keys {(extra + list(unexpected))[:5]}"] if extra or unexpected else [])
        raise CheckpointError(desc, "does not fit the EfficientAT model: " + ", ".join(parts))
    if keep_head and multi is not None:
        model.multi_label = bool(multi)
    model.pretrained_report = {"source": desc, "format": "sed" if sed_desc else "efficientat",
                               "reinitialised": [] if keep_head else ["head.3"]}
    name = next((n for n in effat.EFFICIENTAT_SIZES if getattr(effat, n) is factory), factory.__name__)
    model.sed_config = {"name": name, "kwargs": model.sed_kwargs()}
    log.info("loaded EfficientAT weights from %s", desc)
    return model


def _hook(factory, source, num_classes=None, **kwargs):
    return build_efficientat_from_pretrained(source, num_classes=num_classes, factory=factory, **kwargs)


for _name, (_size, _file) in SHORT_NAMES.items():
    register_pretrained(_size, _hook, default=_name)

register_importer(Importer("efficientat", build_efficientat_from_pretrained, short_names=SHORT_NAMES,
                           claims_state=claims_state))
