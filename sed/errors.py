"""User-facing errors: each carries a one-line message that names the file and the problem.

The CLI prints ``str(err)`` for these (no traceback) and goes on with the rest of a batch.
"""

from __future__ import annotations

import os
import reprlib


def printable(text: str) -> str:
    """``text`` with every character that is not printable (newlines, tabs, escape sequences, bidi
    controls) written as a Python escape, so that a report of a hostile file name stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception's message as a reason: its first line (its type when it has none), escaped and
    cut to ``limit`` characters, so that an error built on it stays one line."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    text = printable(lines[0].strip()) if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def short(value) -> str:
    """``repr(value)`` cut to a few dozen characters: a file's contents quoted in a one-line reason."""
    return _REPR.repr(value)


class SedError(Exception):
    """Base class of the errors a user can cause (bad file, bad checkpoint, bad dataset).

    With a path, the message is one printable line whatever the reason quotes (control characters
    and newlines escaped; quote file contents with :func:`short`); without one (a batch summary)
    it may hold several lines, each escaped."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        # the path is escaped (a hostile name cannot split the report); ``self.path`` keeps it as given
        if self.path is not None:
            super().__init__(f"{printable(self.path)}: {printable(reason)}")
        else:
            super().__init__("\n".join(printable(line) for line in reason.split("\n")))


class AudioError(SedError):
    """An audio file that cannot be used: missing, corrupt, empty, NaN, wrong channels or format."""


class CheckpointError(SedError):
    """A checkpoint that cannot be loaded safely or does not describe a known model."""


class DatasetError(SedError):
    """A corpus whose layout, metadata or files are wrong."""


class UsageError(SedError):
    """A bad option, or an input the whole job cannot start without (a checkpoint, a config): the CLI exits
    2."""

    def __init__(self, reason: str | Exception):
        super().__init__(None, str(reason))


class OutputError(UsageError):
    """An output that cannot be written (a directory, a read-only folder, a full disk) or that would
    replace one of the job's inputs: the job stops (exit 2) and leaves no partial file."""

    def __init__(self, path: str | os.PathLike, reason: str):
        SedError.__init__(self, path, reason)
