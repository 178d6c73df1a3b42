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

import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

from sed.errors import CheckpointError, one_line
from sed.models import ast as ast_module
from sed.models.ast import adapt_pos_embed
from sed.models.pretrained import deit, huggingface, original
from sed.models.pretrained.common import SC_STATS, Source, detect_format, infer_arch, unwrap_state
from sed.models.pretrained.sources import Importer, family_of, read_file, register_importer
from sed.models.registry import check_weights, checked_build, register_pretrained

__all__ = ["build_ast_from_pretrained", "resolve_source"]

log = logging.getLogger(__name__)

_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _from_state(sd: Mapping, desc: str, filename: str | None = None) -> Source:
    family = family_of(sd)
    if family not in (None, "ast"):
        raise CheckpointError(desc, f"is a {family} checkpoint, not an AST one (use a {family}_* model)")
    kind = detect_format(sd, desc)
    if kind == "hf":
        state = huggingface.from_hf(sd, desc)
        return Source("hf", state, *infer_arch(state, desc, hf_eps=True), desc)
    if kind == "deit":
        state = {k: v for k, v in sd.items() if not k.startswith(("head.", "head_dist."))}
        dropped = sorted(set(sd) - set(state))
        return Source("deit", state, *infer_arch(state, desc, deit=True), desc, None, dropped)
    state, dropped = original.from_original(sd) if kind == "original" else (dict(sd), [])
    arch, grid = infer_arch(state, desc, strides=original.strides_from_name(filename))
    if filename and os.path.basename(filename).lower().startswith("speechcommands"):
        arch.update(SC_STATS)
    return Source(kind, state, arch, grid, desc, None, dropped)


def _from_sed(desc: dict, state: dict, where: str) -> Source:
    """A sed checkpoint (e.g. one written by training) as the starting point of another model."""
    if not str(desc.get("model_name", "")).startswith("ast"):
        raise CheckpointError(where, f"holds a {desc.get('model_name')!r} model, not an AST")
    kwargs = dict(desc["model_kwargs"])
    labels = kwargs.pop("labels", None) or desc.get("labels") or None
    arch, grid = infer_arch(state, where, strides=(kwargs.get("fstride", 10), kwargs.get("tstride", 10)))
    arch.update(kwargs)
    return Source("sed", dict(state), arch, grid, where, labels)


def resolve_source(source) -> Source:
    """Any accepted ``source`` -> sed-layout tensors + architecture + positional grid."""
    if isinstance(source, Mapping):
        return _from_state(unwrap_state(source, "<state dict>"), "<state dict>")
    if not isinstance(source, (str, os.PathLike)):
        raise CheckpointError(None, f"unsupported pretrained source of type {type(source).__name__}")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return huggingface.hf_dir(path)
    if path.is_file():
        desc, content = read_file(path)
        if desc is not None:
            return _from_sed(desc, content, str(path))
        return _from_state(unwrap_state(content, path), str(path), filename=str(path))
    if text in huggingface.HF_SHORT_NAMES:
        repo, defaults = huggingface.HF_SHORT_NAMES[text]
        return huggingface.hf_dir(huggingface.download_hf(repo), defaults)
    name = text.split("timm/", 1)[-1]
    if name in deit.DEIT_NAMES or name == "vit_deit_base_distilled_patch16_384":
        name = name.removeprefix("vit_")
        return _from_state(deit.deit_by_name(name), name)
    if text.lower().endswith(_FILE_SUFFIXES):
        raise CheckpointError(text, "no such file")
    if _HUB_ID.match(text):
        defaults = next((d for r, d in huggingface.HF_SHORT_NAMES.values() if r == text), None)
        return huggingface.hf_dir(huggingface.download_hf(text), defaults)
    known = ", ".join([*huggingface.HF_SHORT_NAMES, *deit.DEIT_NAMES])
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
    with checked_build(src.desc, factory.__name__, src.state):
        model = factory(**kwargs) if num_classes is None else factory(num_classes=num_classes, **kwargs)

    state = {k: v for k, v in src.state.items() if keep_head or not k.startswith("head.")}
    notes = []
    w = state.get("patch_embed.proj.weight")  # when missing, the key check below names it
    if w is not None and w.dim() == 4 and w.shape[1] != 1:
        state["patch_embed.proj.weight"] = w.sum(dim=1, keepdim=True)
        notes.append(f"patch_embed: summed {w.shape[1]} input channels")
    dst_grid = model.grid
    if patchmix_pos_quirk:
        p, (fs, ts) = model.patch_embed.proj.kernel_size[0], model.patch_embed.proj.stride
        dst_grid = ((model.input_tdim - p) // fs + 1, (model.input_fdim - p) // ts + 1)
        if dst_grid[0] * dst_grid[1] != model.num_patches:
            raise ValueError("patchmix_pos_quirk needs equal frequency and time strides")
    if "pos_embed" in state and (tuple(src.grid) != tuple(dst_grid) or patchmix_pos_quirk):
        try:
            state["pos_embed"] = adapt_pos_embed(state["pos_embed"], src.grid, dst_grid)
        except (ValueError, RuntimeError) as err:
            raise CheckpointError(src.desc, f"cannot adapt its pos_embed: {one_line(err)}") from None
        notes.append(f"pos_embed: grid {src.grid[0]}x{src.grid[1]} -> {dst_grid[0]}x{dst_grid[1]}")

    reinit = [] if keep_head or src.kind == "deit" else ["head"]  # a DeiT head is always new: no warning
    if reinit:
        what = f"{src_nc} -> {model.num_classes} classes" if src_nc is not None else "no head in the source"
        warnings.warn(f"{src.desc}: re-initialised the classifier head 'head' (head.0 LayerNorm, "
                      f"head.1 Linear; {what})", stacklevel=2)

    check_weights(model, state, src.desc)
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


# ---------------------------------------------------------------------- the registry's pretrained= hook
def _hook(factory, source, num_classes=None, **kwargs):
    return build_ast_from_pretrained(source, num_classes=num_classes, factory=factory, **kwargs)


for _name, _default in (("ast_base", "ast-audioset-0.4593"), ("ast_small", "deit_small_distilled_patch16_224"),
                        ("ast_tiny", "deit_tiny_distilled_patch16_224"), ("ast_micro", None)):
    register_pretrained(_name, _hook, default=_default)

register_importer(Importer("ast", build_ast_from_pretrained, short_names=huggingface.HF_SHORT_NAMES))
