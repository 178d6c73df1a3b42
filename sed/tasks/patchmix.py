"""PatchMixTask: AST fine-tuning on ICBHI with Patch-Mix (Bae et al. 2023, spec ``ast-patchmix-icbhi.md`` §2).

``method`` picks one of the three published scripts (spec §2.5):

* ``ce``: plain cross-entropy on the clean forward (``class_weights="inverse_frequency"`` in
  the recipe, as ``icbhi_ce.sh --weighted_loss``); integer targets, so a weighted batch loss is
  normalised by the sum of its sample weights, as ``nn.CrossEntropyLoss(weight)`` does;
* ``patchmix``: only the Patch-Mix forward, ``lam CE(y_a) + (1 - lam) CE(y_b)`` (§2.3);
* ``patchmix_cl``: clean-forward CE + ``alpha * PatchMixContrastiveLoss(projector(mixed),
  clean.detach(), lam, index)`` (§2.4). The :class:`~sed.losses.patchmix_contrastive.Projector`
  is a module of the task (optimised with the model, not part of ``model``, so it is not in
  the self-describing checkpoint's model).

SpecAugment (``freqm``/``timem``) is applied to the features before every method, as the
reference's dataset transform does for all three scripts.

``ma_update`` (``--ma_update --ma_beta``, spec §2.5): the model and projector state
(every parameter and buffer) is copied before each optimisation step - before the forward,
so BatchNorm statistics count as "new" - and after the optimizer step each entry becomes
``ma_beta * old + (1 - ma_beta) * new``; integer buffers (``num_batches_tracked``) are
computed the same way and cast back (truncated). With ``ma_beta = 0.5`` every update is halved.

Validation and test log ``{stage}_sp``, ``{stage}_se`` and ``{stage}_score`` (the ICBHI
score in percent, §2.6; ``icbhi_two_class`` for the ``--two_cls_eval`` variant) besides the
parent's accuracy, macro F1, per-class recall and confusion matrix. Best checkpoints are kept
by ``val_score`` (max) unless ``monitor`` says otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sed.losses.patchmix_contrastive import PatchMixContrastiveLoss, Projector, mixed_ce
from sed.metrics.classification import ICBHIScore
from sed.tasks.classification import ClassificationTask

__all__ = ["METHODS", "PatchMixTask"]

METHODS = ("ce", "patchmix", "patchmix_cl")


class PatchMixTask(ClassificationTask):
    """:class:`ClassificationTask` with the Patch-Mix training methods and the ICBHI score.

    Args (besides the parent's):
        method: ``ce``, ``patchmix`` or ``patchmix_cl``.
        mix_beta: Patch-Mix ``lam ~ Beta(mix_beta, mix_beta)``.
        temperature, alpha: contrastive loss temperature and weight.
        proj_dim: projector output size; ``None`` = the model width (768 for AST-Base, the paper's
            ``--proj_dim 768``). The clean target is not projected, so any other value is an error.
        ma_update, ma_beta: the reference's per-step moving-average weight update.
        icbhi_two_class: normal/abnormal hits in the ICBHI score (``--two_cls_eval``).
    """

    def __init__(
        self,
        method: str = "ce",
        mix_beta: float = 1.0,
        temperature: float = 0.06,
        alpha: float = 1.0,
        proj_dim: int | None = None,
        ma_update: bool = False,
        ma_beta: float = 0.5,
        icbhi_two_class: bool = False,
        **kwargs,
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if not 0.0 <= ma_beta < 1.0:
            raise ValueError(f"ma_beta must be in [0, 1), got {ma_beta}")
        super().__init__(**kwargs)
        if self.hparams.multi_label:
            raise ValueError("PatchMixTask is single-label (ICBHI cycles); multi_label must be false")
        if method != "ce" and not hasattr(self.model, "forward_patch_mix"):
            raise ValueError(f"method {method!r} needs a model with forward_patch_mix (an AST model)")
        if method != "ce" and self.hparams.transfer == "frozen":
            raise ValueError(f"method {method!r} trains the backbone; transfer='frozen' is only for 'ce'")
        self.method, self.mix_beta, self.alpha = method, float(mix_beta), float(alpha)
        self.ma_update, self.ma_beta = bool(ma_update), float(ma_beta)
        self.projector = None
        self.con_loss = None
        if method == "patchmix_cl":
            width = int(self.model.embed_dim)
            if proj_dim is not None and int(proj_dim) != width:
                raise ValueError(
                    f"proj_dim={proj_dim} differs from the model width {width}: the clean target "
                    "is not projected, so both sides of the contrastive loss need the width"
                )
            self.projector = Projector(width, width)
            self.con_loss = PatchMixContrastiveLoss(temperature)
        c = self.hparams.num_classes
        self.icbhi = nn.ModuleDict(
            {s: ICBHIScore(two_class=icbhi_two_class, num_classes=c) for s in ("val", "test")}
        )

    default_monitor = "val_score"

    # ----------------------------------------------------------------------------- training
    def _ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight = self.class_weight if self._weighted else None
        return F.cross_entropy(logits, y, weight=weight, label_smoothing=self.label_smoothing)

    def training_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` of the configured method on one batch (no logging)."""
        wave, lengths, y = batch["wave"], batch.get("lengths"), batch["label"].long()
        if self.method == "ce":
            logits = self._logits(wave, lengths, augment=True)
            return self._ce(logits, y), logits
        feats = self.model.features(wave, lengths)
        if self.specaugment is not None:
            feats = self.specaugment(feats)
        if self.method == "patchmix":
            logits, _, y_a, y_b, lam, _ = self.model.forward_patch_mix(feats, y, self.mix_beta)
            weight = self.class_weight if self._weighted else None
            return mixed_ce(logits, y_a, y_b, lam, weight=weight), logits
        pooled = self.model.forward_fbank_pooled(feats)
        logits = self.model.forward_head(pooled)
        loss = self._ce(logits, y)
        _, mixed, _, _, lam, index = self.model.forward_patch_mix(feats, y, self.mix_beta)
        con = self.con_loss(self.projector(mixed), pooled.detach(), lam, index)
        self.log(
            "train_con_loss", con, on_step=False, on_epoch=True, batch_size=wave.shape[0], sync_dist=True
        )
        return loss + self.alpha * con, logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.method == "ce" and self.hparams.mixup > 0:
            return super().training_step(batch, batch_idx)  # waveform mixup: the parent's soft-target CE
        loss, logits = self.training_loss(batch)
        self.log_train(loss, logits, batch["label"].long())
        return loss

    # ----------------------------------------------------------------------------- moving-average update
    def _ma_modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, **({"projector": self.projector} if self.projector is not None else {})}

    def _ma_state(self) -> dict[str, torch.Tensor]:
        return {
            f"{n}.{k}": v
            for n, m in self._ma_modules().items()
            for k, v in m.state_dict(keep_vars=True).items()
        }

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        if not self.ma_update:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # the closure (forward + backward) runs inside the step: this copy precedes the forward
        old = {k: v.detach().clone() for k, v in self._ma_state().items()}
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        b = self.ma_beta
        with torch.no_grad():
            for k, v in self._ma_state().items():
                new = v.detach()
                if new.is_floating_point() or new.is_complex():
                    new.mul_(1 - b).add_(old[k], alpha=b)
                else:
                    new.copy_((b * old[k].double() + (1 - b) * new.double()).to(new.dtype))

    # ----------------------------------------------------------------------------- evaluation
    def eval_step(self, batch: dict, stage: str) -> None:
        logits = self._logits(batch["wave"], batch.get("lengths"), augment=False)
        y = batch["label"].long()
        loss = self._ce(logits, y)
        self.log(
            f"{stage}_loss", loss, on_epoch=True, prog_bar=True, batch_size=logits.shape[0], sync_dist=True
        )
        pred = logits.argmax(-1)
        for metric in self.metrics[stage].values():
            metric.update(pred, y)
        self.icbhi[stage].update(pred, y)

    def eval_epoch_end(self, stage: str) -> None:
        super().eval_epoch_end(stage)
        sp, se, score = self.icbhi[stage].compute()
        self.log(f"{stage}_sp", sp, sync_dist=True)
        self.log(f"{stage}_se", se, sync_dist=True)
        self.log(f"{stage}_score", score, prog_bar=True, sync_dist=True)
        self.icbhi[stage].reset()
