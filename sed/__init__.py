"""sed: audio sound-event classification and localization.

The one road: file -> waveform (``sed.audio.io``) -> features (``sed.audio.features``) ->
model (``sed.models``) -> scores -> metrics / CLI output.
"""

from sed.errors import AudioError, CheckpointError, DatasetError, SedError

__version__ = "0.1.0"

__all__ = ["AudioError", "CheckpointError", "Classifier", "DatasetError", "SedError", "__version__", "load_model", "save_model"]


def __getattr__(name: str):
    # Heavy imports (torch, the models) only when the API is used: `sed.Classifier.from_pretrained(...)`.
    if name == "Classifier":
        from sed.inference import Classifier

        return Classifier
    if name in ("load_model", "save_model"):
        from sed import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'sed' has no attribute {name!r}")
