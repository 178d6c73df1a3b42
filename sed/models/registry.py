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
import json
from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

__all__ = ["create_model", "is_model", "list_models", "model_entry", "register_model", "register_pretrained"]


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
