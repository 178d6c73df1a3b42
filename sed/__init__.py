"""sed: audio sound-event classification and localization.

The one road: file -> waveform (``sed.audio.io``) -> features (``sed.audio.features``) ->
model (``sed.models``) -> scores (``sed.inference``) -> metrics (``sed.metrics``) / CLI output
(``sed.cli``).
"""

from sed.errors import AudioError, CheckpointError, DatasetError, SedError
from sed.version import __version__

__all__ = [
    "AudioError",
    "CheckpointError",
    "Classifier",
    "DatasetError",
    "EnsembleClassifier",
    "SedError",
    "__version__",
    "load_model",
    "save_model",
]

_LAZY = {  # heavy imports (torch, the models) only when the API is used:
    # `sed.Classifier.from_pretrained(...)`
    "Classifier": ("sed.inference.classifier", "Classifier"),
    "EnsembleClassifier": ("sed.inference.ensemble", "EnsembleClassifier"),
    "load_model": ("sed.models.loading", "load_model"),
    "save_model": ("sed.checkpoint", "save_model"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'sed' has no attribute {name!r}")
