"""Where and in which precision inference runs: ``--device auto|cpu|cuda[:N]`` and ``--precision``."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    return torch.device(device)


PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` (int8 is a quantised model in float32 context)."""
    if precision in ("fp32", "32", "32-true", "int8"):
        return nullcontext()
    if precision in ("bf16", "bf16-mixed"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision in ("fp16", "16-mixed"):
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    raise ValueError(f"unknown precision {precision!r}; use fp32, bf16, fp16 or int8")


def check_precision(device: str, precision: str) -> torch.device:
    """The device ``device`` resolves to, after refusing (ValueError, one line) a precision it cannot run:
    int8 runs on the CPU only, and an unknown precision is refused. What every classifier checks, and the
    service before it starts any worker."""
    if precision == "int8" and device not in ("auto", "cpu"):
        raise ValueError("--precision int8 runs on the CPU (dynamic int8 kernels); use --device cpu")
    resolved = resolve_device("cpu" if precision == "int8" else device)
    autocast(resolved, precision)  # an unknown precision
    return resolved
