"""DetectionTask: a frame model trained on strong, weak and unlabelled clips with a mean teacher, as the
DCASE 2024 Task 4 baseline (DESED_task ``recipes/dcase2024_task4_baseline``:
``local/sed_trainer_pretrained.py``, ``train_pretrained.py``, ``confs/pretrained.yaml``).

A training batch (:class:`~sed.data.modules.detection.DetectionDataModule`) holds strong, weak and
unlabelled clips (``batch["source"]`` 0, 1, 2; the baseline's sizes 12 | 12 | 24). The loss is

    strong BCE(frames) + weak BCE(clip) + const_max * ramp(step) * consistency

- strong: frame BCE on the strong clips, targets from their events at the model's ``frame_hop``
  (:func:`~sed.data.events.batch_frame_targets`), over the classes their source annotates
  (``class_mask``) and the frames they fill; weak: clip BCE on the weak clips (``weak`` targets) through
  the model's clip pooling (:mod:`sed.losses.detection`);
- consistency: the mean squared difference of the student's and the teacher's frame and clip
  probabilities over the whole batch; the teacher is :class:`~sed.tasks.semi.MeanTeacher` (EMA decay
  ``min(ema_decay, 1 - 1 / (step + 1))``, 0.999), the weight ``const_max`` (2) times
  :func:`~sed.tasks.semi.rampup` over ``warmup_epochs`` (50) epochs of steps;
- mixup (``mixup_prob`` 0.5 per batch): the strong clips among themselves and the weak clips among
  themselves, one ``lam ~ Beta(0.2, 0.2)`` and one permutation per source, on the waveforms; ``soft``
  frame targets ``clamp(lam y + (1 - lam) y[perm])`` (``hard``: the union); weak targets become the union
  (the baseline derives them from the mixed frame-0 labels by ``> 0``).
- the learning rate: Adam (lr 1e-3, betas 0.9/0.999) with the baseline's exponential warm-up
  ``exp(-5 (1 - s / L)^2)`` over ``warmup_epochs`` and, from ``decay_epochs`` (100) on, a cosine
  decay to ``max_epochs`` (floor ``min_lr`` 1e-8); gradient clipping (5) is the trainer's
  ``gradient_clip_val``.

Validation and test score the strong clips by their student and teacher frame probabilities (median
filtered by ``median_filter`` seconds per class, 0 = off) with ``sed_scores_eval``
(:mod:`sed.metrics.detection`): ``{stage}_psds1``, ``{stage}_intersection_f1``, ``{stage}_collar_f1``
(thresholds ``val_threshold``), ``{stage}_teacher_*`` likewise, and the weak clips by the macro F1 of
their clip probabilities at 0.5 (``{stage}_weak_f1``, ``{stage}_teacher_weak_f1``). The monitored
objective ``val_obj`` is the baseline's: the student's ``objective`` metric (``intersection`` F1,
``psds1`` or ``collar`` F1) plus its weak F1 when weak clips are validated (the baseline adds a MAESTRO
term, absent here). Classes without a ground-truth event in the split are left out of the event metrics
(``sed_scores_eval`` needs one per class); Lightning's sanity check computes none (the baseline runs
none). Test writes each strong file's student scores, every class (``test_scores/<file>.tsv``, the
``sed_scores_eval`` format), into the run directory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sed.data.events import batch_frame_targets
from sed.losses.detection import consistency_loss, strong_loss, weak_loss
from sed.models.frames import is_frame_model
from sed.tasks.base import Task
from sed.tasks.semi import MeanTeacher, rampup

__all__ = ["DetectionTask", "lr_factor", "mix_within"]

MIXUPS = ("soft", "hard")
OBJECTIVES = ("intersection", "psds1", "collar")
_METRIC = {"intersection": "intersection_f1", "psds1": "psds1", "collar": "collar_f1"}


def lr_factor(step: int, warmup: int, decay_start: int | None, total: int, min_ratio: float) -> float:
    """The baseline's ``ExponentialWarmup`` factor at (1-based) ``step``: ``rampup(step, warmup)`` up to
    ``decay_start``, then ``max(min_ratio, cos(pi/2 (step - decay_start) / (total - decay_start)))``."""
    if decay_start is not None and step >= decay_start and total > decay_start:
        return max(min_ratio, math.cos((step - decay_start) * math.pi / (2 * (total - decay_start))))
    return rampup(step, warmup)


def mix_within(
    rows: torch.Tensor,
    wave: torch.Tensor,
    lengths: torch.Tensor,
    frames: torch.Tensor,
    weak: torch.Tensor,
    class_mask: torch.Tensor,
    alpha: float = 0.2,
    kind: str = "soft",
    generator: torch.Generator | None = None,
) -> float:
    """Mix the clips ``rows`` (indices of one source) among themselves in place: one
    ``lam ~ Beta(alpha, alpha)``, one permutation; returns ``lam`` (module docstring)."""
    n = int(rows.numel())
    if n < 2:
        return 1.0
    lam = float(torch.distributions.Beta(float(alpha), float(alpha)).sample())
    other = rows[torch.randperm(n, generator=generator).to(rows.device)]
    wave[rows] = lam * wave[rows] + (1 - lam) * wave[other]
    lengths[rows] = torch.maximum(lengths[rows], lengths[other])
    mixed = lam * frames[rows] + (1 - lam) * frames[other] if kind == "soft" else frames[rows] + frames[other]
    frames[rows] = mixed.clamp(0, 1)
    weak[rows] = (weak[rows] + weak[other]).clamp(0, 1)
    class_mask[rows] = class_mask[rows] & class_mask[other]
    return lam


class DetectionTask(Task):
    """Frame-level sound event detection with a mean teacher (see the module docstring).

    Args (besides :class:`~sed.tasks.base.Task`'s; ``model_name`` must be a frame model, e.g. a family
    with ``model_kwargs.frame_pooling``):
        scheduler: ``exponential_warmup`` (the baseline's, from ``warmup_epochs``, ``decay_epochs``,
            ``min_lr``) or one of the base's (``none``, ``multistep``, ``cosine``).
        const_max, warmup_epochs: the consistency weight and its ramp-up (also the lr warm-up).
        ema_decay: the teacher's decay.
        mixup, mixup_prob, mixup_alpha: ``soft``, ``hard`` or null; per-batch probability; Beta parameter.
        median_filter: seconds (one number, or one per class) of the validation/test median filter.
        val_threshold: the decision threshold of the F1 scores.
        objective: what ``val_obj`` adds to the weak F1: ``intersection``, ``psds1`` or ``collar``.
    """

    default_monitor = "val_obj"

    def __init__(
        self,
        model_name: str = "crnn_dcase2024",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: str = "exponential_warmup",
        warmup_epochs: int = 50,
        decay_epochs: int | None = 100,
        min_lr: float = 1e-8,
        const_max: float = 2.0,
        ema_decay: float = 0.999,
        mixup: str | None = "soft",
        mixup_prob: float = 0.5,
        mixup_alpha: float = 0.2,
        median_filter: float | list[float] = 0.0,
        val_threshold: float = 0.5,
        objective: str = "intersection",
        **kwargs: Any,
    ):
        if mixup is not None and mixup not in MIXUPS:
            raise ValueError(f"mixup must be soft, hard or null, got {mixup!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if not 0.0 <= mixup_prob <= 1.0 or not 0.0 <= ema_decay < 1.0 or const_max < 0:
            raise ValueError("mixup_prob must be in [0, 1], ema_decay in [0, 1) and const_max >= 0")
        if warmup_epochs < 0 or (decay_epochs is not None and decay_epochs < 0):
            raise ValueError("warmup_epochs and decay_epochs must be >= 0")
        super().__init__(
            model_name=model_name,
            lr=lr,
            weight_decay=weight_decay,
            betas=betas,
            scheduler=scheduler,
            **kwargs,
        )
        if not is_frame_model(self.model):
            raise ValueError(
                f"{model_name} gives no frame outputs; choose a frame model "
                "(a family with model_kwargs.frame_pooling, or the CRNN)"
            )
        self.model.multi_label = True
        c = self.hparams.num_classes
        filt = median_filter if isinstance(median_filter, list | tuple) else [median_filter] * c
        if len(filt) != c:
            raise ValueError(f"median_filter has {len(filt)} entries for {c} classes")
        self.median_seconds = [float(s) for s in filt]
        self.teacher = MeanTeacher(self.model)
        self.steps_per_epoch = 1  # set at the start of fit
        self._eval: dict[str, dict] = {}

    # ----------------------------------------------------------------------------- schedule
    def on_fit_start(self) -> None:
        max_epochs = max(1, self.trainer.max_epochs or 1)
        self.steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // max_epochs)

    def consistency_weight(self, step: int) -> float:
        """``const_max * rampup(step + 1, warmup_epochs * steps_per_epoch)`` (``step``: 0-based)."""
        h = self.hparams
        return h.const_max * rampup(step + 1, h.warmup_epochs * self.steps_per_epoch)

    def configure_optimizers(self):
        h = self.hparams
        if h.scheduler != "exponential_warmup":
            return super().configure_optimizers()
        from sed.tasks.optim import build_optimizer

        self.on_fit_start()
        opt = build_optimizer(self.parameters(), h.optimizer, h.lr, h.weight_decay, h.betas)
        spe, total = self.steps_per_epoch, self.steps_per_epoch * max(1, self.trainer.max_epochs or 1)
        decay = None if h.decay_epochs is None else h.decay_epochs * spe
        ratio = h.min_lr / h.lr if h.lr > 0 else 0.0

        def factor(step: int) -> float:
            return lr_factor(step + 1, h.warmup_epochs * spe, decay, total, ratio)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------------------- the loss
    def _targets(self, batch: dict, num_frames: int) -> dict:
        """Frame targets ``[B, F, C]`` and the per-clip tensors the loss reads (copies: mixup writes them)."""
        wave = batch["wave"]
        lengths = batch.get("lengths")
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[-1], dtype=torch.long)
        c = self.hparams.num_classes
        return {
            "wave": wave.clone(),
            "lengths": lengths.to(wave.device).clone(),
            "frames": batch_frame_targets(batch["events"], num_frames, self.model.frame_hop, c).to(
                wave.device
            ),
            "weak": batch["weak"].float().clone(),
            "class_mask": batch["class_mask"].bool().clone(),
            "source": batch["source"].to(wave.device),
        }

    def _mixed(self, t: dict) -> dict:
        h = self.hparams
        if h.mixup is None or h.mixup_prob <= 0 or float(torch.rand(())) >= h.mixup_prob:
            return t
        for src in (0, 1):  # strong, weak; never unlabelled (as the baseline)
            rows = torch.nonzero(t["source"] == src).flatten()
            mix_within(
                rows, t["wave"], t["lengths"], t["frames"], t["weak"], t["class_mask"], h.mixup_alpha, h.mixup
            )
        return t

    def _valid_frames(self, lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
        n = torch.tensor([self.model.num_frames(int(s)) for s in lengths.tolist()], device=lengths.device)
        return torch.arange(num_frames, device=lengths.device)[None, :] < n[:, None]

    def losses(self, batch: dict, step: int, mix: bool = True) -> dict[str, torch.Tensor]:
        """The loss terms of one training batch: ``strong``, ``weak``, ``consistency``, ``weight`` and
        ``loss`` (``strong + weak + weight * consistency``)."""
        num_frames = self.model.num_frames(batch["wave"].shape[-1])
        t = self._targets(batch, num_frames)
        if mix:
            t = self._mixed(t)
        s_frames, s_clip = self.model.forward_frames(t["wave"], t["lengths"])
        with torch.no_grad():
            t_frames, t_clip = self.teacher.model.forward_frames(t["wave"], t["lengths"])
        f = min(s_frames.shape[1], num_frames)
        s_frames, t_frames, frames = s_frames[:, :f], t_frames[:, :f], t["frames"][:, :f]
        valid = self._valid_frames(t["lengths"], f)
        strong, weak = t["source"] == 0, t["source"] == 1
        cm = t["class_mask"]
        zero = s_frames.sum() * 0.0
        out = {
            "strong": strong_loss(s_frames[strong], frames[strong], cm[strong], valid[strong])
            if strong.any()
            else zero,
            "weak": weak_loss(s_clip[weak], t["weak"][weak], cm[weak]) if weak.any() else zero,
            "consistency": consistency_loss(s_frames, t_frames, s_clip, t_clip),
            "weight": torch.tensor(self.consistency_weight(step)),
        }
        out["loss"] = out["strong"] + out["weak"] + out["weight"] * out["consistency"]
        return out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.losses(batch, self.global_step)
        n = batch["wave"].shape[0]
        for name, value in terms.items():
            key = "train_loss" if name == "loss" else f"train_{name}"
            self.log(key, value, on_step=False, on_epoch=True, prog_bar=name == "loss", batch_size=n)
        return terms["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.teacher.update(self.model, min(self.hparams.ema_decay, 1.0 - 1.0 / (self.global_step + 1)))

    # ----------------------------------------------------------------------------- validation and test
    def _store(self, stage: str) -> dict:
        import torchmetrics

        if stage not in self._eval:
            c = self.hparams.num_classes
            f1 = {
                k: torchmetrics.classification.MultilabelF1Score(c, average="macro").to(self.device)
                for k in ("student", "teacher")
            }
            self._eval[stage] = {"student": {}, "teacher": {}, "gt": {}, "durations": {}, "f1": f1, "weak": 0}
        return self._eval[stage]

    def eval_step(self, batch: dict, stage: str) -> None:
        num_frames = self.model.num_frames(batch["wave"].shape[-1])
        t = self._targets(batch, num_frames)
        outputs = {
            "student": self.model.forward_frames(t["wave"], t["lengths"]),
            "teacher": self.teacher.model.forward_frames(t["wave"], t["lengths"]),
        }
        f = min(outputs["student"][0].shape[1], num_frames)
        valid = self._valid_frames(t["lengths"], f)
        strong, weak, cm = t["source"] == 0, t["source"] == 1, t["class_mask"]
        s_frames, s_clip = outputs["student"]
        loss = s_frames.sum() * 0.0
        if strong.any():
            loss = loss + strong_loss(
                s_frames[strong, :f], t["frames"][strong, :f], cm[strong], valid[strong]
            )
        if weak.any():
            loss = loss + weak_loss(s_clip[weak], t["weak"][weak], cm[weak])
        self.log(f"{stage}_loss", loss, on_epoch=True, batch_size=t["wave"].shape[0], sync_dist=True)
        store = self._store(stage)
        if weak.any():
            store["weak"] += int(weak.sum())
            for k, (_, clip) in outputs.items():
                store["f1"][k].update(clip[weak].float(), t["weak"][weak].long())
        labels, sr = self.labels, self.model.sample_rate
        durations = batch.get("duration")
        for i in torch.nonzero(strong).flatten().tolist():
            fid = Path(str(batch["path"][i])).stem
            n = int(valid[i].sum())
            for k, (frames, _) in outputs.items():
                store[k][fid] = frames[i, :n].detach().float().cpu().numpy()
            events = [e for e in batch["events"][i].tolist() if e[2] >= 0]
            store["gt"][fid] = [(float(a), float(b), labels[int(c)]) for a, b, c in events]
            d = float(durations[i]) if durations is not None else int(t["lengths"][i]) / sr
            store["durations"][fid] = d

    def _gathered(self, store: dict) -> dict:
        if (
            self.trainer.world_size > 1
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            parts: list = [None] * self.trainer.world_size
            mine = {k: store[k] for k in ("student", "teacher", "gt", "durations")}
            torch.distributed.all_gather_object(parts, mine)
            for k in mine:
                store[k] = {fid: v for p in parts for fid, v in p[k].items()}
        return store

    def _scores(self, probs: dict[str, np.ndarray], keep: list[int]) -> dict:
        """Score frames of the classes ``keep``, each median filtered by its ``median_filter`` seconds
        (:mod:`sed.metrics.postprocess`, as ``sedkit detect`` filters)."""
        from sed.metrics.detection import frame_scores
        from sed.metrics.postprocess import filter_frames, median_filter

        hop = self.model.frame_hop
        labels = [self.labels[c] for c in keep]
        lengths = filter_frames(dict(zip(labels, [self.median_seconds[c] for c in keep])), hop, labels)
        return {
            fid: frame_scores(median_filter(p[:, keep], lengths), hop, labels) for fid, p in probs.items()
        }

    def eval_epoch_end(self, stage: str) -> None:
        from sed.metrics.detection import detection_report, psds

        store = self._gathered(self._eval.pop(stage, None) or self._store(stage))
        self._eval.pop(stage, None)
        h = self.hparams
        values: dict[str, float] = {}
        if store["weak"]:
            for k, metric in store["f1"].items():
                values["weak_f1" if k == "student" else "teacher_weak_f1"] = float(metric.compute())
        present = {label for events in store["gt"].values() for _, _, label in events}
        keep = [c for c, label in enumerate(self.labels) if label in present]
        if keep and not self.trainer.sanity_checking:
            for k in ("student", "teacher"):
                scores = self._scores(store[k], keep)
                gt, durations = store["gt"], store["durations"]
                m = detection_report(scores, gt, durations, h.val_threshold, with_psds=False)["macro"]
                m["psds1"] = psds(scores, gt, durations, scenario=1)
                prefix = "" if k == "student" else "teacher_"
                for name in ("psds1", "intersection_f1", "collar_f1"):
                    values[prefix + name] = float(m[name])
                if k == "student" and stage == "test":
                    self._write_scores(self._scores(store[k], list(range(len(self.labels)))))
        if not values:
            return
        obj = values.get(_METRIC[h.objective], 0.0) + values.get("weak_f1", 0.0)
        if stage == "val":
            values["obj"] = obj
        for name, v in values.items():
            self.log(f"{stage}_{name}", v, prog_bar=name in ("obj", "psds1"))

    def _write_scores(self, scores: dict) -> None:
        log_dir = self.trainer.log_dir if self.trainer.loggers else None
        if not log_dir or not self.trainer.is_global_zero:
            return
        from sed.fileio import atomic_open

        folder = Path(log_dir) / "test_scores"
        folder.mkdir(parents=True, exist_ok=True)
        for fid, df in scores.items():
            with atomic_open(folder / f"{fid}.tsv") as f:
                df.to_csv(f, sep="\t", index=False)

    # ----------------------------------------------------------------------------- checkpoints
    def sed_description(self) -> dict:
        from sed.checkpoint import describe

        return describe(
            self.model,
            self.labels,
            multi_label=True,
            state_dict_prefix="model.",
            task="detection",
            frame_hop=float(self.model.frame_hop),
        )

    def configure_callbacks(self):
        from sed.tasks.callbacks import event_task_callbacks

        name, mode = self.monitor
        return event_task_callbacks(self.trainer, name, mode, self.hparams.save_top_k)
