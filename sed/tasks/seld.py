"""SELDTask: a registry SELD model + ACS + masking + ADPIT loss + DCASE metrics, as a LightningModule
(../shared/specs/seld.md 3-6, 8).

Training batches come from :class:`sed.data.modules.seld.StarssDataModule`: ``"audio"`` ``[B, 4, T]``
or cached ``"features"`` ``[B, C, frames, bins]`` (unstandardised) and ADPIT ``"target"``
``[B, frames, 6, 4|5, C]``.

* **ACS** (``acs_p``): audio batches go through :class:`~sed.augment.acs.RandomACS`; feature batches
  get the same per-sample random row through :func:`~sed.augment.acs.apply_acs_features` (exact for
  FOA) and :func:`~sed.augment.acs.transform_adpit_targets`.
* **Time/frequency masks** (``freqm``, ``timem``, widths in feature frames / mel bins, one mask each):
  :class:`~sed.augment.specaugment.SpecAugment` draws one mask per sample, **shared by all feature
  channels** (log-mel and intensity/GCC channels of a bin stay consistent), and masked bins are set to
  the standardiser's mean, i.e. to 0 after standardisation.
* **Loss**: ADPIT MSE (:func:`~sed.losses.adpit.adpit_loss`).
* **Validation/test**: items are whole files; each output is post-processed
  (:func:`~sed.models.accdoa.multi_accdoa_to_detections`) and scored per file with
  :class:`~sed.metrics.seld.SELDMetrics2023` (``SELDMetrics2024``, distances in metres, when the model
  predicts distance). References are decoded from the ADPIT targets (up to 3 instances of a class per
  frame, as the targets hold). Logged: ``val_ER, val_F, val_LE, val_LR, val_SELD`` (2024: ``val_F,
  val_DOAE, val_RDE, ...``), ``val_F/<class>``, and ``val_loss``. Best checkpoints: lowest ``val_SELD``.
  Under DDP the per-file counts of all ranks are gathered before scoring.
* **Standardiser**: fitted once at the start of fit, when not fitted yet (a resumed or fine-tuned model
  keeps its statistics), over the data module's ``standardizer_features()``; rank 0 computes it and
  broadcasts the statistics. It is a buffer of the model, so it travels in every checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sed.augment.acs import RandomACS, apply_acs_features, transform_adpit_targets
from sed.losses.adpit import adpit_loss
from sed.models.base import is_seld_model
from sed.tasks.base import Task

__all__ = ["SELDTask", "targets_to_events"]


def targets_to_events(target: torch.Tensor, num_frames: int | None = None) -> list:
    """Reference events (``SeldEvent``, degrees; distance in metres with 5-entry targets) of one item's
    ADPIT target ``[frames, 6, 4|5, C]``; one event per active slot, the slot number as track."""
    from sed.data.corpora.dcase_csv import SeldEvent

    t = target[:num_frames].detach().float().cpu().numpy()
    f_idx, s_idx, c_idx = np.nonzero(t[:, :, 0, :] > 0.5)
    v = t[f_idx, s_idx, 1:, c_idx]  # [N, 3|4]
    az = np.degrees(np.arctan2(v[:, 1], v[:, 0]))
    el = np.degrees(np.arctan2(v[:, 2], np.hypot(v[:, 0], v[:, 1])))
    dist = v[:, 3] if v.shape[1] > 3 else [None] * len(v)
    return [
        SeldEvent(int(f), int(c), int(s), float(a), float(e), None if d is None else float(d))
        for f, c, s, a, e, d in zip(f_idx, c_idx, s_idx, az, el, dist)
    ]


class SELDTask(Task):
    """Multi-ACCDOA SELD training (see the module docstring).

    Args:
        model_name, model_kwargs, pretrained: the model, from ``sed.models.create_model``
            (``resnet_conformer``, ``resnet_conformer_tiny``, ``seldnet_baseline``).
        num_classes, labels, multi_label: linked from the data module by ``sedkit fit``
            (``multi_label`` must be False: SELD classes are regressed, not tagged).
        acs_p: probability of a random ACS row per training sample (p = 1: uniform over the 8 rows).
        freqm, timem: mask widths (0 = off), masks shared across channels.
        optimizer, lr, weight_decay, betas, scheduler, warmup_steps, lr_*, min_lr_ratio: as the
            classification task (the baseline: Adam, lr 1e-3, no scheduler).
        threshold, unify_threshold: post-processing (activity 0.5, unify 15 degrees).
        monitor, save_top_k: best checkpoints (``val_SELD``, lower is better).
    """

    default_monitor = "val_SELD"

    def __init__(
        self,
        model_name: str = "resnet_conformer",
        num_classes: int = 13,
        acs_p: float = 1.0,
        freqm: int = 0,
        timem: int = 0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        threshold: float = 0.5,
        unify_threshold: float = 15.0,
        monitor: str = "val_SELD",
        **kwargs: Any,
    ):
        if kwargs.get("multi_label"):
            raise ValueError("SELD targets are multi-ACCDOA regression targets; multi_label must be False")
        super().__init__(
            model_name=model_name,
            num_classes=num_classes,
            lr=lr,
            weight_decay=weight_decay,
            betas=betas,
            monitor=monitor,
            **kwargs,
        )
        if not is_seld_model(self.model):
            raise ValueError(f"{model_name} is not a SELD model (no forward_features / standardizer)")
        self.fmt = self.model.channel_layout
        self.acs = RandomACS(p=acs_p, fmt=self.fmt)
        self.specaugment = None
        if freqm or timem:
            from sed.augment.specaugment import SpecAugment

            self.specaugment = SpecAugment(freqm=freqm, timem=timem, mask_value=0.0)
        self._metrics: dict[str, Any] = {}

    # ----------------------------------------------------------------------------- helpers
    @staticmethod
    def default_labels(num_classes: int) -> list[str]:
        return [f"class_{k}" for k in range(num_classes)]

    def monitor_mode(self, name: str) -> str:
        return "max" if name.split("/")[0] in ("val_F", "val_LR") else "min"

    def _new_metrics(self):
        from sed.metrics.seld import SELDMetrics2023, SELDMetrics2024

        if self.model.with_distance:
            return SELDMetrics2024(self.hparams.num_classes, ref_cm_to_m=False)
        return SELDMetrics2023(self.hparams.num_classes)

    def _mask(self, feats: torch.Tensor) -> torch.Tensor:
        """Time/frequency masks shared across channels; masked bins take the standardiser mean."""
        ones = torch.ones(feats.shape[0], 1, feats.shape[2], feats.shape[3], device=feats.device)
        keep = self.specaugment(ones) > 0.5  # [B, 1, T, F]
        mean = self.model.standardizer.mean.to(feats.dtype)[None, :, None, :]
        return torch.where(keep, feats, mean.expand_as(feats))

    def _features(self, batch: dict) -> torch.Tensor:
        if "features" in batch:
            return batch["features"].float()
        return self.model.features(batch["audio"])

    @staticmethod
    def _align(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(output.shape[1], target.shape[1])
        return output[:, :n], target[:, :n]

    # ----------------------------------------------------------------------------- standardiser
    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        cache = getattr(dm, "cache", None)
        if cache is not None:
            from sed.data.modules.feature_cache import frontend_key

            if frontend_key(self.model.frontend) != cache.key:
                raise ValueError(
                    f"cached features in {cache.dir} were made by another front end than "
                    f"{self.hparams.model_name}'s; drop cache_dir or match the front-end parameters"
                )
        std = self.model.standardizer
        if (
            std.fitted
            or dm is None
            or not getattr(dm, "fit_standardizer", False)
            or not hasattr(dm, "standardizer_features")
        ):
            return
        state = None
        if self.trainer.is_global_zero:
            std.reset()
            for feats in dm.standardizer_features(lambda w: self.model.features(w.to(self.device))):
                std.partial_fit(feats)
            state = {k: v.cpu() for k, v in std.state_dict().items()}
        state = self.trainer.strategy.broadcast(state, src=0)
        std.load_state_dict({k: v.to(self.device) for k, v in state.items()})

    # ----------------------------------------------------------------------------- steps
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        target = batch["target"]
        if "features" in batch:
            feats = batch["features"].float()
            if self.acs.p > 0:
                index = self.acs.sample_index(feats.shape[0], feats.device)
                feats = apply_acs_features(feats, index, self.fmt)
                target = transform_adpit_targets(target, index)
        else:
            audio, target = self.acs(batch["audio"], target)
            feats = self.model.features(audio)
        if self.specaugment is not None:
            feats = self._mask(feats)
        output, target = self._align(self.model.forward_features(feats), target)
        loss = adpit_loss(output.float(), target)
        self.log(
            "train_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=feats.shape[0],
            sync_dist=True,
        )
        return loss

    def eval_step(self, batch: dict, stage: str) -> None:
        from sed.models.accdoa import multi_accdoa_to_detections

        output, target = self._align(self.model.forward_features(self._features(batch)), batch["target"])
        frames = batch.get("label_frames", torch.full((output.shape[0],), output.shape[1]))
        per_item = adpit_loss(output.float(), target, reduction="none")  # [B, T, C]
        valid = torch.arange(output.shape[1], device=output.device)[None] < frames.to(output.device)[:, None]
        loss = (per_item * valid[..., None]).sum() / (valid.sum() * per_item.shape[-1]).clamp_min(1)
        self.log(f"{stage}_loss", loss, on_epoch=True, batch_size=output.shape[0], sync_dist=True)
        metrics = self._metrics.setdefault(stage, self._new_metrics())
        out_cpu = output.detach().float().cpu()
        for b in range(output.shape[0]):
            n = min(int(frames[b]), output.shape[1])
            dets = multi_accdoa_to_detections(
                out_cpu[b, :n],
                self.hparams.num_classes,
                threshold=self.hparams.threshold,
                unify_threshold=self.hparams.unify_threshold,
            )
            metrics.update([d.to_event() for d in dets], targets_to_events(target[b], n))

    def eval_epoch_end(self, stage: str) -> None:
        metrics = self._metrics.pop(stage, None) or self._new_metrics()
        if (
            self.trainer.world_size > 1
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            gathered: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, metrics._files)
            metrics._files = [f for part in gathered for f in part]
        if not metrics._files:
            return
        results = metrics.compute()
        for name, value in results.items():
            v = float(value)
            self.log(
                f"{stage}_{name}",
                180.0 if math.isnan(v) and name in ("LE", "DOAE") else v,
                prog_bar=name == "SELD",
            )
        for label, f in zip(self.labels, metrics.class_wise["F"]):
            self.log(f"{stage}_F/{label}", float(f))

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        output = self.model.forward_features(self._features(batch))
        return {
            "file": batch.get("file"),
            "output": output.float().cpu(),
            "label_frames": batch.get("label_frames"),
        }

    # ----------------------------------------------------------------------------- checkpoints
    def sed_description(self) -> dict:
        from sed.checkpoint import describe

        m = self.model
        return describe(
            m,
            self.labels,
            multi_label=False,
            state_dict_prefix="model.",
            task="seld",
            output="multi_accdoa",
            num_tracks=3,
            with_distance=bool(m.with_distance),
            label_hop_seconds=m.label_frame_samples / m.sample_rate,
            feature_hop_seconds=m.label_frame_samples / m.frames_per_label / m.sample_rate,
            label_frame_samples=m.label_frame_samples,
            standardizer_fitted=bool(m.standardizer.fitted),
        )

    def configure_callbacks(self):
        from sed.tasks.callbacks import event_task_callbacks

        name, mode = self.monitor
        return event_task_callbacks(self.trainer, name, mode, self.hparams.save_top_k)
