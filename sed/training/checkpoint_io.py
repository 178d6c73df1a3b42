"""Checkpoint files that survive a kill: Lightning's checkpoint IO with every local write atomic.

Lightning writes through fsspec into a temporary file in the system's temp folder and then
*moves* it; where that folder is another file system the move is a copy, and a kill during it
leaves a partial ``last.ckpt`` that ``--ckpt_path last`` would resume from. Here the file is
written beside its destination (``.<name>.<random>.ckpt``: hidden, and not matched by Lightning's
``last*`` search), flushed to disk, and renamed over the destination. Temporary files that a
killed run left behind are removed by the next run's first save into the folder. Remote paths
(``s3://`` ...) keep Lightning's own writer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from sed.fileio import atomic_save, stale_temps

__all__ = ["AtomicCheckpointIO"]


def _is_local(path) -> bool:
    text = os.fspath(path)
    return "://" not in text or text.startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    def __init__(self):
        super().__init__()
        self._swept: set[Path] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(os.fspath(path).removeprefix("file://"))
        if path.parent not in self._swept:  # the first save of this run into the folder
            for tmp in stale_temps(path.parent, path.suffix or ".tmp"):
                tmp.unlink(missing_ok=True)
            self._swept.add(path.parent)
        atomic_save(path, lambda tmp: torch.save(checkpoint, tmp))
