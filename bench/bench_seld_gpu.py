"""SELD GPU smoke: one training epoch (bf16-mixed) of a SELD model on a synthetic STARSS corpus, throughput
in training sequences per second. ``--cpu``: fp32, tiny model, tiny corpus (runs anywhere).

python bench/bench_seld_gpu.py [--model resnet_conformer] [--cpu] [--out /tmp/bench_seld]"""

import argparse
import json
import time

import pytorch_lightning as pl
import torch

from sed.data.modules.seld import StarssDataModule
from sed.data.synth.corpora import make_starss
from sed.tasks.seld import SELDTask


class _Clock(pl.Callback):
    """Sequences per second after the first (warm-up) batch."""

    def on_train_epoch_start(self, trainer, pl_module):
        self.t0, self.n = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()
            return
        self.n += batch["target"].shape[0]

    def on_train_epoch_end(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--out", default="/tmp/bench_seld")
    a = ap.parse_args()
    cpu = a.cpu or not torch.cuda.is_available()
    model = a.model or ("resnet_conformer_tiny" if cpu else "resnet_conformer")
    files, duration, batch, workers = (2, 8.0, 4, 0) if cpu else (12, 60.0, 32, 4)
    make_starss(f"{a.out}/data", seed=0, files_per_split=files, duration=duration, num_classes=13)
    dm = StarssDataModule(
        f"{a.out}/data", sequence_seconds=2.0 if cpu else 5.0, batch_size=batch, num_workers=workers
    )
    task = SELDTask(model, num_classes=13, acs_p=1.0)
    clock = _Clock()
    tr = pl.Trainer(
        max_epochs=1,
        accelerator="cpu" if cpu else "gpu",
        devices=1,
        precision="32-true" if cpu else "bf16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=[clock],
        default_root_dir=a.out,
    )
    tr.fit(task, dm)
    res = {
        "model": model,
        "device": "cpu" if cpu else torch.cuda.get_device_name(0),
        "precision": "fp32" if cpu else "bf16-mixed",
        "sequences": clock.n,
        "seconds": round(clock.seconds, 2),
        "sequences_per_s": round(clock.n / clock.seconds, 2),
        "train_loss": float(tr.callback_metrics["train_loss"]),
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
