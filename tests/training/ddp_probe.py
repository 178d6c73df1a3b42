"""A callback for the multi-process tests: what each rank trained on, and the weights it ended with."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch


class Probe(pl.Callback):
    """Writes ``<out>/seen-rank{R}-epoch{E}.json`` (the sample paths of rank R's training batches in
    epoch E) and ``<out>/weights-rank{R}.pt`` (its model's weights at the end of fit)."""

    def __init__(self, out: str):
        self.out = Path(out)
        self.seen: list[str] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.extend(batch["path"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"seen-rank{trainer.global_rank}-epoch{trainer.current_epoch}.json"
        path.write_text(json.dumps(self.seen))

    def on_fit_end(self, trainer, pl_module) -> None:
        torch.save(
            {k: v.detach().cpu() for k, v in pl_module.model.state_dict().items()},
            self.out / f"weights-rank{trainer.global_rank}.pt",
        )
