"""User-facing errors: each carries a one-line message that names the file and the problem.

The CLI prints ``str(err)`` for these (no traceback) and goes on with the rest of a batch.
"""

from __future__ import annotations

import os


def printable(text: str) -> str:
    """``text`` with every character that is not printable (newlines, tabs, escape sequences, bidi
    controls) written as a Python escape, so that a report of a hostile file name stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class SedError(Exception):
    """Base class of the errors a user can cause (bad file, bad checkpoint, bad dataset)."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        # the path is escaped (a hostile name cannot split the report); ``self.path`` keeps it as given
        super().__init__(f"{printable(self.path)}: {reason}" if self.path is not None else reason)


class AudioError(SedError):
    """An audio file that cannot be used: missing, corrupt, empty, NaN, wrong channels or format."""


class CheckpointError(SedError):
    """A checkpoint that cannot be loaded safely or does not describe a known model."""


class DatasetError(SedError):
    """A corpus whose layout, metadata or files are wrong."""


class UsageError(SedError):
    """A bad option, or an input the whole job cannot start without (a checkpoint, a config): the CLI exits 2."""

    def __init__(self, reason: str | Exception):
        super().__init__(None, str(reason))
