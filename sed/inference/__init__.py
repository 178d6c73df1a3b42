"""Inference: scores from audio with a loaded model.

- :mod:`~sed.inference.classifier`: :class:`Classifier` (clip and sliding-window classification, embeddings)
- :mod:`~sed.inference.stream`: streaming classification, one result per hop in constant memory (``sedkit stream``)
- :mod:`~sed.inference.seld`: SELD inference on files of any length, DCASE CSVs, DOA plots
- :mod:`~sed.inference.ensemble`: the notes' four ensemble methods and ensembles of classifiers
- :mod:`~sed.inference.ensemble_eval`: members and ensemble methods scored on a data split
- :mod:`~sed.inference.output`: predictions as tables, JSON lines and CSV
- :mod:`~sed.inference.device`: ``--device`` and ``--precision``
"""

from sed.inference.classifier import Classifier, FileResult, Segment
from sed.inference.device import autocast, resolve_device
from sed.inference.ensemble import classify_ensemble, combine

__all__ = ["Classifier", "FileResult", "Segment", "autocast", "classify_ensemble", "combine", "resolve_device"]
