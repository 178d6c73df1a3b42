""":class:`ProbeTask`: embeddings computed once per clip and cached, then a probe head fitted on them.

The notes' "extract feature vector" mode. The backbone is frozen and kept in eval mode; each training
batch is embedded once (no gradient) and cached by the content of its waveform (SHA-256 of the valid
samples), so an epoch over clips already seen costs no backbone forward. Before each validation (and at
the end of training) the head's last ``nn.Linear`` is fitted in seconds on every cached embedding:
``probe: logistic`` -- L2-regularised logistic regression (softmax, or one sigmoid per class for
multi-label data) by L-BFGS (:func:`sed.models.linear_probe.fit_logistic`); ``probe: linear`` -- ridge
regression of the one-hot/multi-hot targets in closed form (:func:`~sed.models.linear_probe.fit_ridge`).
Layers of the head before that Linear (AST's LayerNorm, the CNNs' Dropout) run in eval mode on the
way. With random training crops every epoch adds the new crops to the cache (``max_epochs: 1`` embeds
each clip once). Under DDP the ranks pool their cached embeddings before the fit, so every rank fits
the same head on all the clips. The task runs with manual optimisation: a training step
embeds and caches, and makes an optimiser step with no gradients (it changes nothing but counts the
step, so checkpoints are written); Lightning refuses skipped steps under DDP otherwise.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from sed.models.linear_probe import fit_logistic, fit_ridge
from sed.tasks.classification import ClipTask
from sed.tasks.transfer import apply_transfer

__all__ = ["PROBES", "EmbeddingCache", "ProbeTask", "fit_probe_head"]

PROBES = ("logistic", "linear")


class EmbeddingCache:
    """Embeddings and targets of the training clips, keyed by their waveform's content."""

    def __init__(self):
        self.rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.fitted_size = 0

    @staticmethod
    def key(wave: torch.Tensor, length: int) -> str:
        return hashlib.sha256(wave[:length].detach().float().cpu().numpy().tobytes()).hexdigest()

    def add_batch(
        self, embed, wave: torch.Tensor, lengths: torch.Tensor | None, targets: torch.Tensor
    ) -> int:
        """Embed (with ``embed(wave, lengths)``) the clips of a batch not cached yet; returns how many."""
        n = wave.shape[0]
        lens = [int(x) for x in lengths] if lengths is not None else [wave.shape[-1]] * n
        keys = [self.key(wave[i], lens[i]) for i in range(n)]
        todo = [i for i, k in enumerate(keys) if k not in self.rows]
        if todo:
            idx = torch.as_tensor(todo, device=wave.device)
            with torch.no_grad():
                emb = embed(wave[idx], None if lengths is None else lengths[idx]).float().cpu()
            for j, i in enumerate(todo):
                self.rows[keys[i]] = (emb[j], targets[i].detach().cpu())
        return len(todo)

    @property
    def changed(self) -> bool:
        return len(self.rows) != self.fitted_size

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.rows[k] for k in sorted(self.rows)]  # a fixed order: the same fit on every rank
        return torch.stack([e for e, _ in rows]), torch.stack([t for _, t in rows])

    def pooled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's rows (de-duplicated by key) under torch.distributed, else this process's."""
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list = [None] * dist.get_world_size()
            dist.all_gather_object(parts, self.rows)
            merged = {k: v for part in parts for k, v in part.items()}
            rows = [merged[k] for k in sorted(merged)]
            return torch.stack([e for e, _ in rows]), torch.stack([t for _, t in rows])
        return self.tensors()


def _last_linear(head: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """(the layers before the head's last Linear, that Linear)."""
    layers = list(head) if isinstance(head, nn.Sequential) else [head]
    idx = max((i for i, m in enumerate(layers) if isinstance(m, nn.Linear)), default=None)
    if idx is None or any(isinstance(m, nn.Linear) for m in layers[idx + 1 :]) or idx != len(layers) - 1:
        raise ValueError(f"a probe fits a head ending in nn.Linear; this head is {type(head).__name__}")
    return nn.Sequential(*layers[:idx]), layers[idx]


@torch.no_grad()
def fit_probe_head(
    head: nn.Module,
    embeddings: torch.Tensor,
    targets: torch.Tensor,
    probe: str = "logistic",
    l2: float = 1e-3,
    multi_label: bool = False,
) -> float:
    """Fit the head's last Linear on ``embeddings [N, D]`` (see the module docstring); ``targets`` are
    class ids ``[N]`` or multi-hot ``[N, C]``. Returns the probe's training accuracy (multi-label: the
    share of right class decisions)."""
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
    pre, linear = _last_linear(head)
    was = pre.training
    pre.eval()
    feats = pre(embeddings.to(linear.weight.device, linear.weight.dtype)).float().cpu()
    pre.train(was)
    c = linear.out_features
    y = targets.float() if multi_label else targets.long()
    fit = fit_logistic if probe == "logistic" else fit_ridge
    w, b = fit(feats, y, c, l2=l2, multi_label=multi_label)
    linear.weight.copy_(w.to(linear.weight))
    linear.bias.copy_(b.to(linear.bias))
    logits = feats @ w.T + b
    if multi_label:
        return float(((logits >= (0.0 if probe == "logistic" else 0.5)) == y.bool()).float().mean())
    return float((logits.argmax(-1) == y).float().mean())


class ProbeTask(ClipTask):
    """A frozen backbone's embeddings, cached, and a probe head fitted on them (see the module docstring).

    Args:
        model_name, model_kwargs, pretrained, num_classes, labels, multi_label: as every task.
        probe: ``logistic`` or ``linear``; probe_l2: its L2 weight.
        monitor, save_top_k: best checkpoints.

    No optimiser, augmentation or loss options: nothing is trained by gradient.
    """

    frozen_backbone = True

    def __init__(
        self,
        model_name: str = "cnn_small",
        num_classes: int = 2,
        labels: list[str] | None = None,
        multi_label: bool = False,
        pretrained: str | None = None,
        model_kwargs: dict | None = None,
        probe: str = "logistic",
        probe_l2: float = 1e-3,
        monitor: str | None = None,
        save_top_k: int = 1,
    ):
        if probe not in PROBES:
            raise ValueError(f"probe must be one of {', '.join(PROBES)}, got {probe!r}")
        super().__init__(
            model_name=model_name,
            num_classes=num_classes,
            labels=labels,
            multi_label=multi_label,
            pretrained=pretrained,
            model_kwargs=model_kwargs,
            monitor=monitor,
            save_top_k=save_top_k,
        )
        self.trainable = apply_transfer(self.model, "head")
        self.probe_cache = EmbeddingCache()
        self.automatic_optimization = False  # no optimiser steps: the head is fitted, not trained

    def configure_optimizers(self):
        # no gradients reach it: its steps change nothing and only count (so checkpoints are written)
        return torch.optim.SGD(self.model.head.parameters(), lr=0.0)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        if "labeled" in batch:
            batch = batch["labeled"]
        y = batch["label"] if self.hparams.multi_label else batch["label"].long()
        new = self.probe_cache.add_batch(self.model.embed, batch["wave"], batch.get("lengths"), y)
        self.log("probe_embedded", float(new), on_step=False, on_epoch=True, reduce_fx="sum")
        if (
            self._trainer is not None
        ):  # changes nothing (no gradients); counts the step, so checkpoints are written
            self.optimizers().step()
        return None  # the head is fitted on the cache before validation

    def _fit_probe(self) -> None:
        if not self.probe_cache.changed:
            return
        emb, targets = self.probe_cache.pooled()
        acc = fit_probe_head(
            self.model.head,
            emb,
            targets,
            self.hparams.probe,
            self.hparams.probe_l2,
            bool(self.hparams.multi_label),
        )
        self.probe_cache.fitted_size = len(self.probe_cache.rows)
        self.probe_train_acc, self.probe_clips = acc, int(emb.shape[0])

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._fit_probe()

    def on_train_end(self) -> None:
        self._fit_probe()

    def eval_epoch_end(self, stage: str) -> None:
        if stage == "val" and getattr(self, "probe_clips", 0):
            self.log("probe_train_acc", self.probe_train_acc)
            self.log("probe_clips", float(self.probe_clips))
        super().eval_epoch_end(stage)
