"""LightningModules: a model + augmentations + loss + metrics (no signal processing inside)."""

from sed.tasks.classification import ClassificationTask

__all__ = ["ClassificationTask"]
