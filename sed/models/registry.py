"""Model registry in the timm style.

A model family registers factory functions ``fn(num_classes=..., **kwargs) -> nn.Module`` with
:func:`register_model`; :func:`create_model` builds one by name and records on it
``model.sed_config = {"name": name, "kwargs": {...}}``: everything needed to rebuild the same
architecture (then load a ``state_dict``), JSON-serialisable, ``num_classes`` included.

A family may pass a ``pretrained`` hook, ``hook(factory, source, num_classes=None, **kwargs)
-> nn.Module``, which :func:`create_model` calls when ``pretrained`` is given, and a
``default_pretrained`` source used for ``pretrained=True``; an importer module may attach them
later with :func:`register_pretrained` (the AST sizes get theirs from
:mod:`sed.models.pretrained.ast`, so the architecture file does not import its importers).
"""

from __future__ import annotations

import fnmatch
import functools
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sed.errors import CheckpointError, one_line

__all__ = ["check_weights", "checked_build", "create_model", "is_model", "list_models", "model_entry",
           "register_model", "register_pretrained"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    pretrained: Callable[..., nn.Module] | None = None
    default_pretrained: str | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    pretrained: Callable[..., nn.Module] | None = None,
    default_pretrained: str | None = None,
):
    """Register a factory under its function name (or ``name``).

    Usable bare (``@register_model``) or with options
    (``@register_model(pretrained=hook, default_pretrained="...")``).
    """

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        if key in _REGISTRY and _REGISTRY[key].factory is not f:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = ModelEntry(key, f, pretrained, default_pretrained)
        return f

    return deco(fn) if fn is not None else deco


def register_pretrained(name: str, hook: Callable[..., nn.Module], default: str | None = None) -> None:
    """Attach a ``pretrained=`` hook (and the ``pretrained=True`` source) to the registered model ``name``."""
    entry = model_entry(name)
    _REGISTRY[name] = replace(entry, pretrained=hook, default_pretrained=default or entry.default_pretrained)


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` (``"ast_*"``)."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def is_model(name: str) -> bool:
    return name in _REGISTRY


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def _rebuild_kwargs(model: nn.Module, num_classes: int | None, kwargs: dict) -> dict:
    """All kwargs that rebuild ``model``: the model's own (``sed_kwargs()``) when it has them."""
    if hasattr(model, "sed_kwargs"):
        out = dict(model.sed_kwargs())
    else:
        out = dict(kwargs)
        n = num_classes if num_classes is not None else getattr(model, "num_classes", None)
        if n is not None:
            out["num_classes"] = int(n)
    try:
        json.dumps(out)
    except TypeError as err:
        raise TypeError(f"model kwargs must be JSON-serialisable to be saved in a checkpoint: {err}") from None
    return out


def create_model(name: str, num_classes: int | None = None, pretrained=None, **kwargs) -> nn.Module:
    """Build the registered model ``name``.

    ``num_classes=None`` keeps the factory's default (or, with ``pretrained``, the source's head).
    ``pretrained`` is a source understood by the family's hook (a file, a directory, a hub id,
    a short name, an in-memory state dict) or ``True`` for the family's default source.
    """
    entry = model_entry(name)
    if pretrained is True:
        if entry.default_pretrained is None:
            raise ValueError(f"model {name!r} has no default pretrained weights; pass a source")
        pretrained = entry.default_pretrained
    if pretrained is None or pretrained is False:
        ckw = dict(kwargs)
        if num_classes is not None:
            ckw["num_classes"] = num_classes
        model = entry.factory(**ckw)
    else:
        if entry.pretrained is None:
            raise ValueError(f"model {name!r} does not support pretrained weights")
        model = entry.pretrained(entry.factory, pretrained, num_classes=num_classes, **kwargs)
    model.sed_config = {"name": name, "kwargs": _rebuild_kwargs(model, num_classes, kwargs)}
    return model


# ---------------------------------------------------------------------- building from a file's contents
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
    stored = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}  # not views' sizes
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
    kinds = [f"{k} {v.dtype} vs model {e.dtype}" for k, v, e in shared
             if v.is_complex() or v.is_floating_point() != e.is_floating_point()]
    if kinds:
        raise CheckpointError(source, "wrong kind of numbers: " + "; ".join(kinds[:6]))
    bad = [k for k, v, _ in shared if v.is_floating_point() and not torch.isfinite(v.float()).all()]
    if bad:
        raise CheckpointError(source, f"NaN or infinite weights in {', '.join(bad[:6])}")
