"""sed: audio sound-event classification and localization.

The one road: file -> waveform (``sed.audio.io``) -> features (``sed.audio.features``) ->
model (``sed.models``) -> scores -> metrics / CLI output.
"""

from sed.errors import AudioError, CheckpointError, DatasetError, SedError

__version__ = "0.1.0"

__all__ = ["AudioError", "CheckpointError", "DatasetError", "SedError", "__version__"]
