"""Atomic file writing: a reader never sees a half-written output, and a failed job leaves none."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


def _temp_beside_prefix(path: Path, suffix: str) -> str:
    """``.<name>.``: the start of the temporary files beside ``path`` (the name cut to fit NAME_MAX)."""
    keep = NAME_MAX - len(os.fsencode(suffix)) - 12  # ".", ".", 8 random characters, slack
    name = os.fsdecode(os.fsencode(path.name)[:keep]) if len(os.fsencode(path.name)) > keep else path.name
    return f".{name}."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: the mode a plain ``open(path, "w")`` would give (mkstemp's temporaries are private, 0600)
FILE_MODE = 0o666 & ~_umask()


def _temp_beside(path: Path, suffix: str) -> str:
    """A new empty file ``.<name>.<random><suffix>`` in ``path``'s folder (the name cut to fit NAME_MAX),
    with the permissions a plain new file would have."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_beside_prefix(path, suffix), suffix=suffix, dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    return tmp


def stale_temps(folder: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """The temporary files (``.<name>.<8 random characters><suffix>``) that atomic writes killed
    midway left in ``folder``."""
    folder = Path(folder)
    pattern = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(suffix) + "$")
    return sorted(p for p in folder.iterdir() if pattern.match(p.name) and p.is_file()) if folder.is_dir() else []


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    tmp = _temp_beside(path, ".tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(path: str | os.PathLike, save_fn) -> None:
    """Call ``save_fn(tmp_path)`` (e.g. ``np.save`` or ``soundfile.write``), flush the file to disk
    and move it into place."""
    path = Path(path)
    tmp = _temp_beside(path, path.suffix or ".tmp")
    try:
        save_fn(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def derived_name(stem: str, suffix: str, limit: int = NAME_MAX) -> str:
    """``stem + suffix`` as an output file name that the file system accepts.

    A name longer than ``limit`` bytes is shortened deterministically: the stem is cut (on a character
    boundary) and a hash of the whole stem is appended, ``<cut stem>~<12 hex digits><suffix>``, so two
    long names that share a prefix still get different outputs, and a rerun writes the same file.
    """
    name = stem + suffix
    if len(os.fsencode(name)) <= limit:
        return name
    import hashlib

    tag = "~" + hashlib.sha1(os.fsencode(stem)).hexdigest()[:12]
    budget = limit - len(os.fsencode(tag + suffix))
    cut = stem
    while len(os.fsencode(cut)) > budget:
        cut = cut[:-1]
    return cut + tag + suffix
