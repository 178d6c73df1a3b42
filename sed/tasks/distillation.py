"""DistillationTask: a compact student learns from one teacher or an averaged ensemble of teachers.

Hinton et al. 2015 ("Distilling the Knowledge in a Neural Network"): the teachers' logits are
softened at ``temperature`` and averaged over the teachers (:func:`sed.losses.distillation.soften`,
the mean of ``softmax(t_m / T)``); the student minimises
``alpha * T^2 * KL(teacher || student) + (1 - alpha) * CE(student, label)``
(the Bernoulli version for multi-label data). Validation and test score the student alone with
the parent's metrics and hard-label loss.

Teachers are sed checkpoints (``.ckpt`` / ``.pt`` / ``.safetensors``, or anything
:func:`sed.models.load_model` reads), loaded frozen in eval mode and kept in a plain list
attribute: they are not submodules, so they are neither trained, nor in ``state_dict()``, nor
in the student's checkpoint. A teacher at another sample rate than the student (a 16 kHz AST or CED
teaching a 32 kHz EfficientAT) gets each batch resampled to its rate with
``torchaudio.functional.resample`` (valid lengths scaled, rounded up). The student's checkpoint is the
parent's self-description of the student (``sed_meta``) plus ``sed_meta["distilled_from"]`` (teacher
paths and hashes, T, alpha); ``sedkit classify --checkpoint student.ckpt`` needs nothing else.

Teacher cache (``teacher_cache``: a folder). Each clip's teacher logits ``[M, C]`` are written
once as ``<key>.pt``, ``key = sha256(clip path, valid samples, sha256 of the clip's waveform
samples, the teachers' checkpoint SHA-256s)``. The waveform digest stands for the crop start and
length (the batch does not carry the crop offset): the key matches exactly when the teacher would
see the same samples. The cache is only used when the training input is deterministic:

- the data module's training crop is deterministic: ``clip_seconds`` is None or no training clip is
  longer than ``clip_seconds`` (checked in ``setup`` for :class:`~sed.data.modules.audio.AudioDataModule`;
  a data module that cannot be checked is treated as random), and
- waveform ``mixup`` is off (mixed waves are new inputs every step).

Otherwise a warning says the cache is off and the teachers run on every batch (random crops
would only fill the folder with entries that never hit). ``teacher_forwards`` counts the clips
that went through the teachers (a test hook; a cache hit adds nothing).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
import torchaudio
from pytorch_lightning.utilities import rank_zero_warn

from sed.data.clips import ClipDataset
from sed.data.modules.base import SedDataModule
from sed.errors import CheckpointError
from sed.losses.distillation import distillation_loss, multilabel_distillation_loss, soften
from sed.tasks.classification import ClassificationTask

__all__ = ["DistillationTask", "file_sha256"]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class DistillationTask(ClassificationTask):
    """Knowledge distillation into the registry model ``model_name`` (e.g. ``cnn_tiny``).

    Args:
        teachers: teacher checkpoint paths; several make an ensemble teacher (softened
            probabilities averaged). Their labels must equal the data's labels.
        temperature: softening temperature T (> 0).
        alpha: weight of the soft (teacher) term; ``1 - alpha`` weighs the hard-label term.
        teacher_cache: folder for per-clip teacher logits (see the module docstring for when it is used).
        **kwargs: everything :class:`~sed.tasks.classification.ClassificationTask` takes
            (``model_name``, ``model_kwargs``, optimiser, SpecAugment, mixup, ...). The KD loss replaces
            the hard-label loss in training; ``label_smoothing`` and ``class_weights`` only affect the
            validation/test loss.
    """

    def __init__(
        self,
        teachers: list[str],
        temperature: float = 4.0,
        alpha: float = 0.5,
        teacher_cache: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not teachers:
            raise ValueError("DistillationTask needs at least one teacher checkpoint")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.teacher_paths = [str(t) for t in teachers]
        self.teacher_hashes: list[str] = []
        self.teacher_rates: list[int | None] = []  # a teacher at another rate gets the batch resampled
        members = []
        for path in self.teacher_paths:
            model, meta = self._load_teacher(path)
            members.append(model)
        # a plain list: not submodules, so not trained, not moved by Lightning, not in the state_dict
        self._teachers: list[torch.nn.Module] = members
        self.teacher_cache = Path(teacher_cache) if teacher_cache else None
        self._cache_train = False
        self.teacher_forwards = 0
        self.cache_hits = 0

    # ----------------------------------------------------------------------------- teachers
    def _load_teacher(self, path: str) -> tuple[torch.nn.Module, dict]:
        from sed.models.loading import load_model

        model, meta = load_model(path)
        labels = list(meta.get("labels") or getattr(model, "labels", None) or [])
        if labels != self.labels:
            raise CheckpointError(
                path,
                f"teacher labels {labels} differ from the data's labels {self.labels}; "
                "a teacher must be trained on the same classes in the same order",
            )
        if bool(meta.get("multi_label", False)) != bool(self.hparams.multi_label):
            kind = "multi-label" if meta.get("multi_label") else "single-label"
            raise CheckpointError(path, f"teacher is {kind}, the data is not")
        rate = meta.get("sample_rate") or getattr(model, "sample_rate", None)
        self.teacher_rates.append(int(rate) if rate else None)
        p = Path(path)
        self.teacher_hashes.append(
            file_sha256(p) if p.is_file() else hashlib.sha256(str(path).encode()).hexdigest()
        )
        model.eval()
        for q in model.parameters():
            q.requires_grad_(False)
        return model, meta

    @property
    def teachers(self) -> list[torch.nn.Module]:
        return self._teachers

    def _move_teachers(self) -> None:
        for t in self._teachers:
            t.to(self.device).eval()

    def on_fit_start(self) -> None:
        self._move_teachers()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit" or self.teacher_cache is None:
            return
        self._cache_train = self._deterministic_train_crop()
        if self._cache_train:
            self.teacher_cache.mkdir(parents=True, exist_ok=True)
        else:
            rank_zero_warn(
                "teacher_cache is off: training inputs are not deterministic (random crops of clips "
                "longer than clip_seconds, mixup, or a data module sed cannot check); the teachers run "
                "on every batch"
            )

    def _deterministic_train_crop(self) -> bool:
        if self.hparams.mixup > 0:
            return False
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if not isinstance(dm, SedDataModule):
            return False
        ds = dm.dataset("train")
        if not isinstance(ds, ClipDataset):  # cycles of ICBHI, shards: sed cannot check their crops
            return False
        n = getattr(ds, "clip_samples", None)
        if n is None:
            return True
        try:
            return all(b - a <= n for a, b in (ds._span(it) for it in ds.items))
        except Exception:  # noqa: BLE001 - an unreadable item: the data module reports it itself
            return False

    def _run_teachers(self, wave: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Teacher logits ``[M, B, C]`` (float32)."""
        if self._teachers and next(self._teachers[0].parameters()).device != wave.device:
            self._move_teachers()
        self.teacher_forwards += wave.shape[0]
        own = getattr(self.model, "sample_rate", None)
        with torch.no_grad():
            out = []
            for t, rate in zip(self._teachers, self.teacher_rates):
                w, n = self._at_rate(wave, lengths, own, rate)
                out.append(t(w, lengths=n).float())
            return torch.stack(out)

    @staticmethod
    def _at_rate(wave: torch.Tensor, lengths: torch.Tensor | None, own: int | None, rate: int | None):
        """The batch (and its valid lengths) resampled from the student's rate to a teacher's."""
        if not own or not rate or int(own) == int(rate):
            return wave, lengths
        out = torchaudio.functional.resample(wave.float(), int(own), int(rate))
        if lengths is not None:
            lengths = torch.clamp(torch.ceil(lengths.double() * rate / own).long(), max=out.shape[-1])
        return out, lengths

    def _cache_key(self, path: str, wave: torch.Tensor, length: int) -> str:
        h = hashlib.sha256()
        digest = hashlib.sha256(
            wave[:length].detach().float().cpu().contiguous().numpy().tobytes()
        ).hexdigest()
        for part in (os.path.abspath(path), str(length), digest, *self.teacher_hashes):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()

    def teacher_logits(self, batch: dict, use_cache: bool = True) -> torch.Tensor:
        """The teachers' logits ``[M, B, C]`` for a batch, from the cache where it applies."""
        wave, lengths = batch["wave"], batch.get("lengths")
        paths = batch.get("path")
        if not (use_cache and self._cache_train and paths is not None):
            return self._run_teachers(wave, lengths)
        lens = lengths.tolist() if lengths is not None else [wave.shape[-1]] * wave.shape[0]
        keys = [self._cache_key(p, w, n) for p, w, n in zip(paths, wave, lens)]
        out: list[torch.Tensor | None] = []
        for k in keys:
            f = self.teacher_cache / f"{k}.pt"
            out.append(torch.load(f, map_location="cpu", weights_only=True) if f.is_file() else None)
        missing = [i for i, x in enumerate(out) if x is None]
        self.cache_hits += len(keys) - len(missing)
        if missing:
            idx = torch.tensor(missing, device=wave.device)
            fresh = self._run_teachers(wave[idx], None if lengths is None else lengths[idx])
            from sed.fileio import atomic_save

            for j, i in enumerate(missing):
                logits = fresh[:, j].detach().cpu().contiguous()
                atomic_save(self.teacher_cache / f"{keys[i]}.pt", lambda tmp, x=logits: torch.save(x, tmp))
                out[i] = logits
        return torch.stack(out, dim=1).to(wave.device)

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        batch = self.mixed(batch)  # the teachers see the mixed waves too
        wave, lengths, targets = batch["wave"], batch["lengths"], batch["targets"]
        teacher = self.teacher_logits(batch)
        multi = bool(self.hparams.multi_label)
        probs = soften(list(teacher), self.temperature, multi_label=multi)
        logits = self._logits(wave, lengths, augment=True)
        fn = multilabel_distillation_loss if multi else distillation_loss
        terms = fn(
            logits,
            target=targets,
            temperature=self.temperature,
            alpha=self.alpha,
            teacher_probs=probs,
            return_terms=True,
        )
        self.log_train(terms.total, logits, targets)
        for name, value in (("train_kd", terms.kd), ("train_ce", terms.ce)):
            if value is not None:
                self.log(name, value, on_step=False, on_epoch=True, batch_size=wave.shape[0], sync_dist=True)
        return terms.total

    # ----------------------------------------------------------------------------- checkpoints
    def sed_description(self) -> dict:
        desc = super().sed_description()  # the student only
        desc["distilled_from"] = {
            "teachers": self.teacher_paths,
            "sha256": self.teacher_hashes,
            "temperature": self.temperature,
            "alpha": self.alpha,
        }
        return desc
