"""Which importer reads a foreign source: short names, files and directories of each family's public format.

Each family's importer module (``pretrained/ast.py``, ``beats.py``, ``ced.py``, ``efficientat.py``)
registers an :class:`Importer`: its short names, how to recognise a loaded file's contents or a
directory as its own, and ``build(source, num_classes=None, **overrides) -> model``.
:func:`import_pretrained` (used by :func:`sed.models.loading.load_model`) asks them in turn;
:func:`family_of` names the family a loaded file belongs to, so a family's ``pretrained=`` hook can
refuse another family's checkpoint with one line.

A file goes through several hands (``load_model`` checks for a sed description, this module asks
which family claims it, the importer builds from it); :func:`read_file` reads it once per
:func:`one_read` scope (``import_pretrained`` and ``load_model`` open one) and hands the same
contents to each.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from sed.checkpoint import read_checkpoint
from sed.errors import CheckpointError

__all__ = ["Importer", "family_of", "import_pretrained", "importers", "one_read", "read_file", "read_foreign",
           "register_importer", "short_names"]


@dataclass(frozen=True)
class Importer:
    family: str  # "ast", "beats", "ced", "efficientat"
    build: Callable[..., nn.Module]  # build(source, num_classes=None, **overrides) -> model (sed_config set)
    short_names: Mapping[str, Any] = field(default_factory=dict)  # name -> whatever build needs to fetch it
    claims_state: Callable[[Mapping], bool] | None = None  # the contents of a file read by read_foreign
    claims_dir: Callable[[Path], bool] | None = None  # a local directory (e.g. a Hugging Face snapshot)


_IMPORTERS: dict[str, Importer] = {}


def register_importer(importer: Importer) -> None:
    _IMPORTERS[importer.family] = importer


def importers() -> list[Importer]:
    return list(_IMPORTERS.values())


def short_names() -> dict[str, str]:
    """Every short name -> its family."""
    return {n: imp.family for imp in _IMPORTERS.values() for n in imp.short_names}


_READS: ContextVar[dict | None] = ContextVar("sed_checkpoint_reads", default=None)


@contextmanager
def one_read() -> Iterator[None]:
    """Within this scope (nested scopes share the outer one) :func:`read_file` reads each file once."""
    token = _READS.set({}) if _READS.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _READS.reset(token)


def read_file(path: str | os.PathLike) -> tuple[dict | None, Mapping]:
    """:func:`sed.checkpoint.read_checkpoint` of ``path``, remembered for the :func:`one_read` scope
    (keyed by the real path, size and modification time)."""
    memo = _READS.get()
    if memo is None:
        return read_checkpoint(path)
    try:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    except OSError:
        return read_checkpoint(path)  # it names the problem
    if key not in memo:
        memo[key] = read_checkpoint(path)
    return memo[key]


def read_foreign(path: str | os.PathLike) -> Mapping:
    """A foreign weights file's contents, read without executing code (``weights_only`` / safetensors)."""
    desc, content = read_file(path)
    if desc is not None:
        raise CheckpointError(path, "is a sed checkpoint, not a foreign one")
    return content


def family_of(content: Mapping | Path) -> str | None:
    """The family whose importer claims a loaded file's contents (or a directory), else None."""
    for imp in _IMPORTERS.values():
        check = imp.claims_dir if isinstance(content, Path) else imp.claims_state
        try:
            if check is not None and check(content):
                return imp.family
        except Exception:  # noqa: BLE001 - a sniffer that trips on odd contents does not claim them
            continue
    return None


def import_pretrained(source, **overrides) -> nn.Module:
    """A model from a foreign ``source`` (short name, file, directory, hub id): the importer of the
    family it belongs to builds it; what no other family claims goes to the AST importer, which
    knows the most formats and names what it cannot read."""
    text = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    family = None
    with one_read():
        if text is not None:
            family = short_names().get(text)
            path = Path(text).expanduser()
            if family is None and path.is_dir():
                family = family_of(path)
            elif family is None and path.is_file():
                family = family_of(read_foreign(path))
        imp = _IMPORTERS.get(family or "ast")
        if imp is None:
            raise CheckpointError(text, "no importer for this source")
        return imp.build(source, **overrides)
