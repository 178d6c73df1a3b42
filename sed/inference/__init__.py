"""Inference: scores from audio with a loaded model.

- :mod:`~sed.inference.classifier`: :class:`Classifier` (clip and sliding-window classification, embeddings)
- :mod:`~sed.inference.stream`: streaming classification, one result per hop in constant memory
  (``sedkit stream``)
- :mod:`~sed.inference.seld`: SELD inference on files of any length, DCASE CSVs, DOA plots
- :mod:`~sed.inference.ensemble`: the notes' four ensemble methods and :class:`EnsembleClassifier`
  (Classifier's API)
- :mod:`~sed.inference.search`: an index of window embeddings searched by a sentence or an example
  (``sedkit index``, ``sedkit search``)
- :mod:`~sed.inference.device`: ``--device`` and ``--precision``
"""

import importlib

__all__ = [
    "Classifier",
    "EnsembleClassifier",
    "FileResult",
    "Segment",
    "autocast",
    "combine",
    "resolve_device",
]

_LAZY = {
    "Classifier": "classifier",
    "FileResult": "classifier",
    "Segment": "classifier",
    "autocast": "device",
    "resolve_device": "device",
    "EnsembleClassifier": "ensemble",
    "combine": "ensemble",
}


def __getattr__(name: str):
    """The package's names, imported on first use: a light submodule (``output``) costs no model imports."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"sed.inference.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sed.inference' has no attribute {name!r}")
