"""User-facing errors: each carries a one-line message that names the file and the problem.

The CLI prints ``str(err)`` for these (no traceback) and goes on with the rest of a batch.
"""

from __future__ import annotations

import os


class SedError(Exception):
    """Base class of the errors a user can cause (bad file, bad checkpoint, bad dataset)."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class AudioError(SedError):
    """An audio file that cannot be used: missing, corrupt, empty, NaN, wrong channels or format."""


class CheckpointError(SedError):
    """A checkpoint that cannot be loaded safely or does not describe a known model."""


class DatasetError(SedError):
    """A corpus whose layout, metadata or files are wrong."""
