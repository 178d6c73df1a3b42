"""The allocation budget of a build whose arguments a file supplied (a checkpoint's kwargs, a release cfg).

:func:`checked_build` runs the build under :class:`_Budget`, a dispatch mode that refuses, before it
allocates, the tensor op that would pass 8x the bytes of the file's weights (plus 64 MiB) or 20 ops per
weight tensor: a small file naming absurd sizes is one :class:`~sed.errors.CheckpointError`, never a
large allocation. :func:`check_weights` checks the tensors against the built model (shape, kind, finite).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sed.errors import CheckpointError, one_line

__all__ = ["check_weights", "checked_build"]


class _Budget(TorchDispatchMode):
    """Refuses (ValueError) the tensor op that would pass ``max_bytes`` allocated or ``max_ops`` ops in
    all, before it runs: an op that makes new tensors is first run on the meta device, which
    allocates nothing (in-place ops and views allocate nothing either)."""

    def __init__(self, max_bytes: int, max_ops: int):
        super().__init__()
        self.bytes_left, self.ops_left = max_bytes, max_ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops_left -= 1
        if self.ops_left < 0:
            raise ValueError("it asks for far more layers than its weights hold")
        fresh, factory = _op_kind(func)
        if any(fresh):
            self.bytes_left -= _new_bytes(func, fresh, factory, args, kwargs)
            if self.bytes_left < 0:
                raise ValueError("it asks for a model far larger than its weights")
        return func(*args, **kwargs)


@functools.cache
def _op_kind(func) -> tuple[tuple[bool, ...], dict]:
    """Which returns of ``func`` are new tensors (not views nor its inputs), and for a factory the
    kwargs that make it allocate on the meta device."""
    names = {a.name for a in func._schema.arguments}
    factory = {"device": torch.device("meta"), **({"pin_memory": False} if "pin_memory" in names else {})}
    return tuple(r.alias_info is None for r in func._schema.returns), factory if "device" in names else {}


def _meta(x):
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    return type(x)(_meta(v) for v in x) if isinstance(x, (list, tuple)) else x


def _new_bytes(func, fresh, factory, args, kwargs) -> int:
    try:
        out = func(*_meta(args), **{**{k: _meta(v) for k, v in kwargs.items()}, **factory})
    except Exception:  # noqa: BLE001 - no meta kernel (or one that needs data): the op itself will tell
        return 0
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return sum(t.numel() * t.element_size() for t, f in zip(outs, fresh) if f and isinstance(t, torch.Tensor))


@contextmanager
def checked_build(source, what: str, weights: Mapping) -> Iterator[None]:
    """Around building ``what`` from kwargs that a file supplied: the build may allocate 8 times the
    bytes of the file's ``weights`` (plus 64 MiB for front ends) and run 20 tensor ops per weight
    tensor (plus 10,000), which is refused before it allocates; any failure is one
    :class:`CheckpointError` naming ``source``."""
    tensors = [t for t in weights.values() if isinstance(t, torch.Tensor)]
    stored = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors
    }  # not views' sizes
    try:
        with _Budget(8 * sum(stored.values()) + 2**26, 20 * len(tensors) + 10_000):
            yield
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - a factory given absurd kwargs can fail in any way
        raise CheckpointError(source, f"cannot build {what}: {one_line(e)}") from None


def check_weights(model: nn.Module, state: Mapping, source) -> None:
    """A :class:`CheckpointError` naming ``source`` unless each tensor of ``state`` that ``model`` has
    fits it: the same shape, a number of the same kind (floating point or not; never complex), finite."""
    expected = model.state_dict()
    shared = [(k, v, expected[k]) for k, v in state.items() if k in expected]
    wrong = [f"{k} {tuple(v.shape)} vs model {tuple(e.shape)}" for k, v, e in shared if v.shape != e.shape]
    if wrong:
        raise CheckpointError(source, "shape mismatch: " + "; ".join(wrong[:6]))
    kinds = [
        f"{k} {v.dtype} vs model {e.dtype}"
        for k, v, e in shared
        if v.is_complex() or v.is_floating_point() != e.is_floating_point()
    ]
    if kinds:
        raise CheckpointError(source, "wrong kind of numbers: " + "; ".join(kinds[:6]))
    bad = [k for k, v, _ in shared if v.is_floating_point() and not torch.isfinite(v.float()).all()]
    if bad:
        raise CheckpointError(source, f"NaN or infinite weights in {', '.join(bad[:6])}")
