"""A pretrained source resolved once into its contents: a local file or directory, a short name, a hub id, a
URL.

:func:`resolve` reads a source exactly once (files through :func:`sed.checkpoint.read_checkpoint`:
``weights_only`` pickles or safetensors, never code) into :class:`Contents`, which every later step
(which family claims it, its architecture, its key mapping) reads from. Short names are the declared
weights of the families (:mod:`sed.models.family`); :func:`download` is the one download helper: it tries a
weight's sources in order (``hf://owner/repo`` snapshots, ``hf://owner/repo/file`` files, ``https://`` URLs
into the torch hub cache, ``timm://name`` ImageNet models) and turns any failure into one line naming the
official page to download from by hand. Nothing here runs at test time against the network: the fetchers
(:func:`hub_file`, :func:`hub_snapshot`, :func:`url_file`, :func:`timm_state`) are the test hooks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sed.checkpoint import read_checkpoint
from sed.errors import CheckpointError, one_line
from sed.models.family import Weights, find_weights, weights_table

__all__ = ["Contents", "download", "hub_file", "hub_snapshot", "resolve", "timm_state", "url_file"]

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
_MISSING = (
    "EntryNotFoundError",
    "RepositoryNotFoundError",
    "RemoteEntryNotFoundError",
)  # try the next mirror


@dataclass
class Contents:
    """What a source holds, read once."""

    desc: str  # how messages name the source
    state: Mapping  # the file's top-level contents (a state dict, a release dict with cfg/model, ...)
    sed: dict | None = None  # a sed checkpoint's description (the source is a sed checkpoint)
    config: dict | None = None  # a directory's config.json
    preprocessor: dict | None = None  # a directory's preprocessor_config.json
    filename: str | None = None  # the file's name (some formats name their strides in it)
    directory: Path | None = None
    weights: Weights | None = None  # the declared weights of a short name
    defaults: dict[str, Any] = field(default_factory=dict)  # model kwargs of the declared weights


# ---------------------------------------------------------------------- fetchers (the test hooks)
def hub_file(repo: str, filename: str) -> str:
    """``huggingface_hub.hf_hub_download`` into its cache."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo, filename)


def hub_snapshot(repo: str) -> str:
    """A hub model repository's configs and weights (safetensors, else ``pytorch_model.bin``)."""
    from huggingface_hub import snapshot_download

    path = snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.txt"])
    if not any(Path(path).glob("*.safetensors")):
        path = snapshot_download(repo, allow_patterns=["*.json", "pytorch_model.bin"])
    return path


def url_file(url: str) -> str:
    """A URL's file in the torch hub cache (``checkpoints/<basename>``), downloaded when absent."""
    import torch

    dst = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1].split("?")[0]
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dst), progress=True)
    return str(dst)


def timm_state(name: str) -> dict:
    """The state dict of a timm ImageNet model, downloaded by timm."""
    import timm

    return timm.create_model(name, pretrained=True).state_dict()


# ---------------------------------------------------------------------- the one download helper
def _fetch(spec: str) -> str | dict:
    kind, _, rest = spec.partition("://")
    if kind == "hf":
        parts = rest.split("/", 2)
        return hub_file(f"{parts[0]}/{parts[1]}", parts[2]) if len(parts) == 3 else hub_snapshot(rest)
    if kind in ("https", "http"):
        return url_file(spec)
    if kind == "timm":
        return timm_state(rest)
    raise ValueError(f"unknown source scheme {spec!r}")


def download(weights: Weights) -> str | dict:
    """A path (file or directory), or a timm state dict, of declared ``weights``: its sources in
    order, the next one only when a mirror lacks the file; any other failure is one line."""
    absent = []
    for spec in weights.sources:
        try:
            return _fetch(spec)
        except Exception as err:  # noqa: BLE001 - offline, proxy, HTTP, hub errors: one line for the user
            if type(err).__name__ in _MISSING:
                absent.append(spec)
                continue
            raise CheckpointError(
                weights.name,
                f"could not be downloaded from {spec} ({one_line(err, 160)}); "
                f"download it from {weights.homepage} and pass its path",
            ) from None
    raise CheckpointError(
        weights.name,
        f"could not be downloaded (not found: {', '.join(absent)}); download it "
        f"from {weights.homepage} and pass its path",
    )


# ---------------------------------------------------------------------- resolving
def _read_json(file: Path, where: Path) -> dict | None:
    if not file.is_file():
        return None
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise CheckpointError(where, f"cannot read {file.name}: {one_line(err)}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(where, f"{file.name} holds a {type(cfg).__name__}, not a JSON object")
    return cfg


def _directory(path: Path, desc: str) -> Contents:
    """A Hugging Face style directory: config.json (+ preprocessor_config.json) and one weights file."""
    config = _read_json(path / "config.json", path)
    if config is None:
        raise CheckpointError(path, "not a model directory (no config.json)")
    weights = [path / "model.safetensors", *sorted(path.glob("*.safetensors")), path / "pytorch_model.bin"]
    file = next((w for w in weights if w.is_file()), None)
    if file is None:
        raise CheckpointError(path, "no model.safetensors or pytorch_model.bin")
    sed_desc, state = read_checkpoint(file)
    if sed_desc is not None:
        raise CheckpointError(file, "is a sed checkpoint: pass the file, not its directory")
    return Contents(
        desc,
        state,
        config=config,
        preprocessor=_read_json(path / "preprocessor_config.json", path),
        filename=file.name,
        directory=path,
    )


def _file(path: Path, desc: str) -> Contents:
    sed_desc, state = read_checkpoint(path)
    if not isinstance(state, Mapping):
        raise CheckpointError(path, f"not a state dict but a {type(state).__name__}")
    return Contents(desc, state, sed=sed_desc, filename=path.name)


def resolve(source) -> Contents:
    """Any accepted source -> its :class:`Contents` (see the module docstring); a CheckpointError
    naming the source when it is none of them."""
    if isinstance(source, Contents):
        return source
    if isinstance(source, Mapping):
        if any(k in source for k in ("sed", "sed_meta")):
            raise CheckpointError("<state dict>", "is a sed checkpoint in memory: pass its path instead")
        return Contents("<state dict>", source)
    if not isinstance(source, (str, os.PathLike)):
        raise CheckpointError(None, f"unsupported pretrained source of type {type(source).__name__}")
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return _directory(path, str(path))
    if path.is_file():
        return _file(path, str(path))
    declared = find_weights(text)
    if declared is not None:
        weights = declared[1]
        got = download(weights)
        if isinstance(got, Mapping):
            out = Contents(text, got)
        else:
            p = Path(got)
            out = _directory(p, f"{text} ({p})") if p.is_dir() else _file(p, f"{text} ({p.name})")
        out.weights, out.defaults = weights, dict(weights.defaults)
        return out
    if text.lower().endswith(_FILE_SUFFIXES):
        raise CheckpointError(text, "no such file")
    if HUB_ID.match(text):
        try:
            got = Path(hub_snapshot(text))
        except Exception as err:  # noqa: BLE001 - network, auth, missing repo: one line
            raise CheckpointError(
                text, f"could not be downloaded from the Hugging Face hub ({one_line(err, 160)})"
            ) from None
        hub = next((w for w in weights_table() if f"hf://{text}" in w.sources), None)
        out = _directory(got, f"{text} ({got})")
        out.weights, out.defaults = hub, dict(hub.defaults) if hub else {}
        return out
    known = ", ".join(w.name for w in weights_table())
    raise CheckpointError(
        text, f"unknown pretrained source (not a file, directory, hub id or short name; short names: {known})"
    )
