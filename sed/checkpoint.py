"""The sed checkpoint file format: self-describing checkpoints, written and read without model code.

A sed checkpoint holds everything that ``sedkit classify --checkpoint X file.wav`` needs: the
model's registry name and constructor kwargs, label names, sample rate, channel layout, clip
length, front-end parameters (normalisation statistics included), whether scores are
multi-label, and the versions that wrote it. Loading never executes code: ``.pt``/``.ckpt``
files go through ``torch.load(weights_only=True)`` and ``.safetensors`` files keep their
metadata as JSON in the header. A file that needs arbitrary unpickling is refused.

This module knows the file format only; building a model from a checkpoint (or from any other
source) is :func:`sed.models.loading.load_model`.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import pickle
import platform
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sed.errors import CheckpointError, one_line, short
from sed.fileio import atomic_open
from sed.version import __version__

FORMAT = "sed-checkpoint-1"
_META_KEYS = (
    "model_name",
    "model_kwargs",
    "labels",
    "sample_rate",
    "channels",
    "clip_samples",
    "max_samples",
    "frontend",
    "multi_label",
)


def versions() -> dict[str, str]:
    out = {"sed": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for mod, dist in (
        ("torchaudio", "torchaudio"),
        ("timm", "timm"),
        ("pytorch_lightning", "pytorch-lightning"),
    ):
        try:  # the installed distribution's version: importing pytorch_lightning only to read it takes
            # seconds
            out[mod] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # optional
            pass
    return out


def describe(model: nn.Module, labels: list[str] | None = None, **meta: Any) -> dict[str, Any]:
    """The self-description of a model built by ``sed.models.create_model``."""
    cfg = getattr(model, "sed_config", None)
    if not cfg:
        raise CheckpointError(
            None, f"{type(model).__name__} was not built by sed.models.create_model; cannot describe it"
        )
    labels = list(labels if labels is not None else (getattr(model, "labels", None) or []))
    frontend = getattr(model, "frontend", None)
    frames = getattr(model, "frame_pooling", None) is not None  # a frame model: sigmoid scores per class
    kwargs = dict(cfg["kwargs"])
    if labels:
        kwargs["labels"] = labels
    out = {
        "format": FORMAT,
        "model_name": cfg["name"],
        "model_kwargs": kwargs,
        "labels": labels,
        "sample_rate": int(getattr(model, "sample_rate", 16000)),
        "channels": getattr(model, "channel_layout", "mono"),
        "clip_samples": getattr(model, "clip_samples", None),
        # the longest input scored in one piece: the clip for a fixed-length model, None for any length
        "max_samples": getattr(model, "max_samples", getattr(model, "clip_samples", None)),
        "frontend": frontend.config() if hasattr(frontend, "config") else None,
        "multi_label": bool(getattr(model, "multi_label", False)) or frames,
        "versions": versions(),
    }
    if frames:  # seconds between output frames
        out["frame_hop"] = float(model.frame_hop)
    out.update(meta)
    # plain JSON types only, so that torch.load(weights_only=True) and safetensors metadata both take it
    return json.loads(json.dumps(out, default=str))


def save_model(
    path: str | os.PathLike, model: nn.Module, labels: list[str] | None = None, **meta: Any
) -> Path:
    """Write a self-describing checkpoint (``.safetensors`` by extension, else a ``torch.save`` file)."""
    return _write(Path(path), describe(model, labels, **meta), model.state_dict())


def _write(path: Path, desc: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
    """A description and its weights as one file (``.safetensors`` by extension, else ``torch.save``)."""
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    # through a Python file object: a failed write (a full disk) is an OSError that atomic_open reports
    # in one line (torch.save to a path says "enforce fail at inline_container.cc")
    with atomic_open(path, "wb") as f:
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            # one storage per tensor: safetensors refuses views of a shared storage (tied or sliced weights)
            f.write(
                save(
                    {k: v.clone() for k, v in state.items()}, metadata={"sed": json.dumps(desc, default=str)}
                )
            )
        else:
            torch.save({"sed": desc, "state_dict": state}, f)
    return path


def convert_checkpoint(source: str | os.PathLike, out: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The model of a sed checkpoint (a Lightning ``.ckpt`` written by sed training, a ``.pt`` or a
    ``.safetensors``) as a self-describing model file at ``out`` (``.safetensors`` by extension, else a
    ``torch.save`` file), as :func:`save_model` writes it: the description and the model's weights only
    (a ``.ckpt``'s optimiser state, loops and teachers are left out). No model code runs.
    Returns (``out``, the description); a file with no sed description is a CheckpointError."""
    desc, state = read_checkpoint(source)
    if desc is None:
        raise CheckpointError(
            source,
            "has no sed description (not written by sed): nothing says which model it "
            "holds; foreign weights load through sed.load_model or --checkpoint as they are",
        )
    desc = {k: v for k, v in desc.items() if k != "state_dict_prefix"}  # the weights are the model's own now
    return _write(Path(out), desc, state), desc


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is plain JSON data (finite numbers), nested at most 8 deep."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth >= 8:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    return isinstance(value, dict) and all(
        isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items()
    )


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


#: an exported ONNX graph (sed.export.onnx): its input, its outputs, and the metadata_props key of its
#: description
ONNX_INPUT, ONNX_OUTPUTS, ONNX_METADATA_KEY = "waveform", ("logits", "embedding"), "sed"

#: the description's fields and their types (``None`` stands for an absent optional field)
_FIELDS = {
    "model_name": str,
    "model_kwargs": dict,
    "labels": list,
    "sample_rate": int,
    "clip_samples": int,
    "max_samples": int,
    "multi_label": bool,
    "channels": str,
    "frontend": dict,
    "format": str,
    "state_dict_prefix": str,
    "frame_hop": float,
}
#: an audio rate, and a clip of at most ten minutes
MAX_SAMPLE_RATE, MAX_CLIP_SECONDS = 384_000, 600


def check_description(desc: Any, path: str | os.PathLike | None) -> dict[str, Any]:
    """``desc`` if it is a well-formed sed description (the fields a loader reads have their types
    and sane values), else a :class:`CheckpointError` naming ``path``."""
    if not isinstance(desc, dict):
        raise CheckpointError(path, f"the sed description is a {type(desc).__name__}, not a dict")
    missing = [k for k in ("model_name", "model_kwargs") if k not in desc]
    if missing:
        raise CheckpointError(path, f"checkpoint description lacks {', '.join(missing)}")
    for key, kind in _FIELDS.items():
        value = desc.get(key)
        if (value is not None or key in ("model_name", "model_kwargs")) and not _is(value, kind):
            raise CheckpointError(path, f"description field {key!r} is {short(value)}, not a {kind.__name__}")
    if desc.get("format") not in (None, FORMAT):
        raise CheckpointError(
            path, f"format {short(desc['format'])} is not {FORMAT} (written by another sed version?)"
        )
    if not _plain(desc["model_kwargs"]) or not _plain(desc.get("frontend")):
        raise CheckpointError(path, "model_kwargs and frontend must hold plain JSON values (finite numbers)")
    if not all(isinstance(x, str) for x in desc.get("labels") or []):
        raise CheckpointError(path, f"labels must be strings, found {short(desc['labels'])}")
    rate = desc.get("sample_rate")
    if rate is not None and not 1 <= rate <= MAX_SAMPLE_RATE:
        raise CheckpointError(path, f"sample_rate {rate} is not an audio rate (1..{MAX_SAMPLE_RATE} Hz)")
    hop = desc.get("frame_hop")
    if hop is not None and not 0 < hop <= MAX_CLIP_SECONDS:
        raise CheckpointError(path, f"frame_hop {hop} is not a frame rate (0 to {MAX_CLIP_SECONDS} s)")
    for key in ("clip_samples", "max_samples"):
        n = desc.get(key)
        if n is not None and not 1 <= n <= MAX_CLIP_SECONDS * (rate or MAX_SAMPLE_RATE):
            raise CheckpointError(path, f"{key} {n} is not a clip length (1 sample to {MAX_CLIP_SECONDS} s)")
    return desc


def _check_state(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """``state`` if it maps names to plain (dense, CPU) tensors, else a CheckpointError."""
    if not isinstance(state, dict):
        raise CheckpointError(path, f"state_dict is a {type(state).__name__}, not a dict of tensors")
    bad = [
        k
        for k, v in state.items()
        if not isinstance(k, str)
        or not isinstance(v, torch.Tensor)
        or v.layout != torch.strided
        or v.device.type != "cpu"
        or v.is_quantized
        or v.is_nested
    ]
    if bad:
        raise CheckpointError(path, f"state_dict entries that are not plain tensors: {short(bad)}")
    return state


def _plain_objects() -> list:
    """Beyond tensors and containers, what ``torch.load(weights_only=True)`` may build here: the training
    ``args`` that reference scripts pickle beside their weights (an ``argparse.Namespace`` holding numbers,
    strings and numpy arrays; e.g. the Patch-Mix repository's ``best.pth``). Constructing these runs no
    code of the file's choosing; anything else a pickle names stays refused."""
    import argparse

    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [
        argparse.Namespace,
        np.ndarray,
        np.dtype,
        *dtypes,
        multiarray._reconstruct,
        multiarray.scalar,
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
    ]


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_plain_objects()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if m := re.search(r"GLOBAL (\S+)", str(e)):
            raise CheckpointError(
                path,
                f"refused: loading it would need arbitrary unpickling (code execution: "
                f"{m[1]}); only plain tensor checkpoints are loaded",
            ) from None
        detail = re.search(r"WeightsUnpickler error: *\n*(.+)", str(e))
        raise CheckpointError(
            path,
            f"not a readable checkpoint (unpickling failed: "
            f"{detail[1].strip()[:200] if detail else one_line(e)})",
        ) from None
    except Exception as e:  # noqa: BLE001 - a damaged file makes torch's reader raise anything
        raise CheckpointError(path, f"not a readable checkpoint ({one_line(e)})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(path, f"not a readable safetensors file ({one_line(e)})") from None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor] | dict]:
    """(sed description or None, raw content) of a file, without executing code. A description
    comes checked (:func:`check_description`), and with it a dict of plain tensors."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(p, "file not found")
    if p.suffix == ".safetensors":
        meta, state = _read_safetensors(p)
        if "sed" not in meta:
            return None, state
        try:
            desc = json.loads(meta["sed"])
        except (ValueError, RecursionError) as e:
            raise CheckpointError(p, f"its 'sed' metadata is not JSON ({one_line(e)})") from None
        return check_description(desc, p), state
    obj = _torch_load(p)
    if not isinstance(obj, dict):
        raise CheckpointError(p, f"expected a dict checkpoint, found {type(obj).__name__}")
    if "sed" in obj:
        return check_description(obj["sed"], p), _check_state(obj.get("state_dict"), p)
    if "sed_meta" in obj and "state_dict" in obj:  # a Lightning checkpoint written by a sed task
        desc, state = check_description(obj["sed_meta"], p), _check_state(obj["state_dict"], p)
        prefix = desc.get("state_dict_prefix") or "model."
        return desc, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return None, obj
