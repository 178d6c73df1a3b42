"""ResNet-Conformer (tiny) vs the baseline CRNN on the same synthetic STARSS corpus and budget (CPU).

python bench/compare_seld_synth.py [--epochs 6] [--out /tmp/seld_compare]; prints val_SELD of both."""

import argparse
import json
import time

import pytorch_lightning as pl

from sed.data.modules.seld import StarssDataModule
from sed.data.synth.corpora import make_starss
from sed.tasks.seld import SELDTask

MODELS = {"seldnet_baseline": {}, "resnet_conformer_tiny": {}}


class _History(pl.Callback):
    """val_SELD of every epoch (sanity check excluded)."""

    def __init__(self):
        self.seld = []

    def on_validation_end(self, trainer, pl_module):  # after the task's epoch-end logging
        if not trainer.sanity_checking and "val_SELD" in trainer.callback_metrics:
            self.seld.append(round(float(trainer.callback_metrics["val_SELD"]), 4))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--out", default="/tmp/seld_compare")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--classes", type=int, default=13)
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()
    make_starss(f"{a.out}/data", seed=0, files_per_split=a.files, duration=a.duration, num_classes=a.classes)
    results = {}
    for name, kwargs in MODELS.items():
        pl.seed_everything(0, workers=True)
        dm = StarssDataModule(
            f"{a.out}/data", num_classes=a.classes, sequence_seconds=2.0, batch_size=a.batch_size
        )
        task = SELDTask(
            name, num_classes=a.classes, labels=dm.label_names, model_kwargs=kwargs, acs_p=1.0, lr=a.lr
        )
        hist = _History()
        t = time.time()
        tr = pl.Trainer(
            max_epochs=a.epochs,
            accelerator="cpu",
            enable_progress_bar=False,
            logger=False,
            enable_model_summary=False,
            default_root_dir=f"{a.out}/{name}",
            callbacks=[hist],
            num_sanity_val_steps=0,
        )
        tr.fit(task, dm)
        m = {k: float(v) for k, v in tr.callback_metrics.items() if "/" not in k}
        m["val_SELD_per_epoch"], m["best_val_SELD"] = hist.seld, min(hist.seld)
        m["seconds"] = round(time.time() - t, 1)
        results[name] = m
        print(name, json.dumps(m), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
