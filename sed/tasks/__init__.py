"""LightningModules: a model + augmentations + loss + metrics (no signal processing inside)."""

from sed.tasks.classification import ClassificationTask
from sed.tasks.distillation import DistillationTask
from sed.tasks.patchmix import PatchMixTask
from sed.tasks.seld import SELDTask

__all__ = ["ClassificationTask", "DistillationTask", "PatchMixTask", "SELDTask"]
