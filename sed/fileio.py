"""Atomic file writing: a reader never sees a half-written output, and a failed job leaves none.

A destination that cannot be written is one line, :class:`~sed.errors.OutputError` ``PATH: reason``:
:func:`check_output` refuses it before the work (a directory, a parent that is a file, a read-only
folder, a device, a name too long, one of the job's inputs), and the atomic writers turn the
``OSError`` of a write that fails anyway (a full disk) into the same error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from sed.errors import OutputError, one_line

NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


def _reason(err: OSError) -> str:
    """Why ``err`` stopped a write, in words: the system's own (``No space left on device``)."""
    if err.errno == errno.EISDIR:
        return "is a directory"
    if err.errno in (errno.ENOTDIR, errno.EEXIST):  # EEXIST: mkdir of a parent that is a file
        return "a parent is not a folder"
    return f"cannot write: {err.strerror or one_line(err)}"


@contextlib.contextmanager
def output_errors(
    path: str | os.PathLike, *written: str | os.PathLike, any_file: bool = False
) -> Iterator[None]:
    """Turn the ``OSError`` of writing ``path`` into one :class:`~sed.errors.OutputError` line.

    The error is the output's when it names no file (a failed ``write``: a full disk) or names
    ``path`` or one of ``written`` (its temporaries); with ``any_file``, whatever file it names (the
    body only makes the way to ``path``). An error about another file (an input) passes unchanged."""
    try:
        yield
    except OSError as err:
        names = {os.path.abspath(p) for p in (path, *written)}
        if not (
            any_file
            or err.filename is None
            or isinstance(err.filename, int)
            or os.path.abspath(os.fsdecode(err.filename)) in names
        ):
            raise
        raise OutputError(path, _reason(err)) from None


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are one existing file (through links); no when either is missing."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_output(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), kind: str = "file"
) -> Path:
    """``path`` as a :class:`~pathlib.Path` when the job may write it (``kind`` ``"file"`` or ``"folder"``),
    else :class:`~sed.errors.OutputError` naming it, before any work: it is one of ``inputs`` (the same
    file, also through a symbolic or hard link; ``None`` and missing inputs are skipped), a directory
    (a file, a device or a pipe for a folder), not a regular file (an atomic write would replace the
    device), its name is too long, or the nearest existing folder on its way is a file or not writable."""
    if not os.fspath(path):
        raise OutputError(path, "no output name given")
    out = Path(path)
    for item in inputs:
        if item is not None and _same_file(out, item):
            named = "" if os.path.abspath(item) == os.path.abspath(out) else f" ({os.fspath(item)})"
            raise OutputError(path, f"is an input{named}; refusing to overwrite it")
    with output_errors(path, any_file=True):  # a name too long, a loop of links: the system's reason
        if len(os.fsencode(out.name)) > NAME_MAX:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        mode = out.stat().st_mode if out.exists() else None
    if kind == "folder" and mode is not None and not stat.S_ISDIR(mode):
        raise OutputError(path, "is not a folder")
    if kind == "file" and mode is not None and stat.S_ISDIR(mode):
        raise OutputError(path, "is a directory")
    if kind == "file" and mode is not None and not stat.S_ISREG(mode):
        raise OutputError(path, "is not a regular file (a device, pipe or socket); write to a file")
    folder = out if kind == "folder" else out.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(path, f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(path, f"cannot write in {folder}: {os.strerror(errno.EACCES)}")
    return out


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
    with output_errors(path, any_file=True):
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
    return (
        sorted(p for p in folder.iterdir() if pattern.match(p.name) and p.is_file())
        if folder.is_dir()
        else []
    )


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    tmp = _temp_beside(path, ".tmp")
    try:
        with output_errors(path, tmp):
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
        with output_errors(path, tmp):
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


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """A new folder ``.<name>.<random>.tmp`` beside ``target`` to fill: renamed to ``target`` when the block
    ends (an older ``target`` folder replaced whole, put back if the rename fails), removed with the folders
    made on the way when the block raises. Its mode is a plain ``mkdir``'s; OS errors are OutputErrors."""
    target = Path(target)
    created = []  # the folders on the way made here: removed again when the job fails
    folder = target.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    with output_errors(target, any_file=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(
            tempfile.mkdtemp(prefix=_temp_beside_prefix(target, ".tmp"), suffix=".tmp", dir=target.parent)
        )
    try:
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            for made in created:
                with contextlib.suppress(OSError):
                    os.rmdir(made)
            raise
        with output_errors(target, any_file=True):
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's folder is private (0700)
            old = None
            if target.is_dir():  # aside first: a rename cannot replace a non-empty folder
                old = Path(
                    tempfile.mkdtemp(
                        prefix=_temp_beside_prefix(target, ".old"), suffix=".old", dir=target.parent
                    )
                )
                os.replace(target, old / target.name)
            try:
                os.replace(tmp, target)
            except OSError:
                if old is not None:  # the old entry back in its place
                    os.replace(old / target.name, target)
                raise
            finally:
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
