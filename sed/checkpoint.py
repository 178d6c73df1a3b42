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

import json
import os
import pickle
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sed.errors import CheckpointError
from sed.fileio import atomic_save
from sed.version import __version__

FORMAT = "sed-checkpoint-1"
_META_KEYS = ("model_name", "model_kwargs", "labels", "sample_rate", "channels", "clip_samples", "frontend",
              "multi_label")


def versions() -> dict[str, str]:
    out = {"sed": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for mod in ("torchaudio", "timm", "pytorch_lightning"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            pass
    return out


def describe(model: nn.Module, labels: list[str] | None = None, **meta: Any) -> dict[str, Any]:
    """The self-description of a model built by ``sed.models.create_model``."""
    cfg = getattr(model, "sed_config", None)
    if not cfg:
        raise CheckpointError(None, f"{type(model).__name__} was not built by sed.models.create_model; cannot describe it")
    labels = list(labels if labels is not None else (getattr(model, "labels", None) or []))
    frontend = getattr(model, "frontend", None)
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
        "frontend": frontend.config() if hasattr(frontend, "config") else None,
        "multi_label": bool(getattr(model, "multi_label", False)),
        "versions": versions(),
    }
    out.update(meta)
    # plain JSON types only, so that torch.load(weights_only=True) and safetensors metadata both take it
    return json.loads(json.dumps(out, default=str))


def save_model(path: str | os.PathLike, model: nn.Module, labels: list[str] | None = None, **meta: Any) -> Path:
    """Write a self-describing checkpoint (``.safetensors`` by extension, else a ``torch.save`` file)."""
    path = Path(path)
    desc = describe(model, labels, **meta)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_save(path, lambda tmp: save_file(state, tmp, metadata={"sed": json.dumps(desc, default=str)}))
    else:
        atomic_save(path, lambda tmp: torch.save({"sed": desc, "state_dict": state}, tmp))
    return path


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(path, "refused: loading it would need arbitrary unpickling (code execution); "
                                    "only plain tensor checkpoints are loaded") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(path, f"not a readable checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor] | dict]:
    """(sed description or None, raw content) of a file, without executing code."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(p, "file not found")
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(p, f"not a readable safetensors file ({e})") from None
        return (json.loads(meta["sed"]) if "sed" in meta else None), state
    obj = _torch_load(p)
    if not isinstance(obj, dict):
        raise CheckpointError(p, f"expected a dict checkpoint, found {type(obj).__name__}")
    if "sed" in obj:
        return obj["sed"], obj["state_dict"]
    if "sed_meta" in obj and "state_dict" in obj:  # a Lightning checkpoint written by a sed task
        prefix = obj["sed_meta"].get("state_dict_prefix", "model.")
        state = {k[len(prefix):]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
        return obj["sed_meta"], state
    return None, obj
