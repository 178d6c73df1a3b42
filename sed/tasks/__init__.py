"""LightningModules: a model + augmentations + loss + metrics (no signal processing inside).

One class per training regime on one base (:class:`~sed.tasks.base.Task`); see :mod:`sed.tasks.base`.
"""

from sed.tasks.base import Task
from sed.tasks.classification import ClassificationTask, ClipTask
from sed.tasks.detection import DetectionTask
from sed.tasks.distillation import DistillationTask
from sed.tasks.patchmix import PatchMixTask
from sed.tasks.probe import ProbeTask
from sed.tasks.seld import SELDTask
from sed.tasks.semi import SemiSupervisedTask

__all__ = [
    "ClassificationTask",
    "ClipTask",
    "DetectionTask",
    "DistillationTask",
    "PatchMixTask",
    "ProbeTask",
    "SELDTask",
    "SemiSupervisedTask",
    "Task",
]
