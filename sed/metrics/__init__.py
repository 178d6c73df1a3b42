"""Metrics, one concept per file; the public functions and classes are re-exported here.

- :mod:`~sed.metrics.classification`: the ICBHI score (``icbhi_score``, ``ICBHIScore``)
- :mod:`~sed.metrics.seld`: DCASE SELD metrics (``SELDMetrics2023``, ``SELDMetrics2024``, jackknife)
- :mod:`~sed.metrics.seld_eval`: prediction CSV folders against reference folders (``sedkit seld-eval``)
- :mod:`~sed.metrics.detection`: sound event detection, PSDS1/2 and F1s through sed_scores_eval (imported from
  there, not here: sed_scores_eval takes seconds to import); :mod:`~sed.metrics.detection_io` its files,
  :mod:`~sed.metrics.detection_eval` prediction files against a ground truth (``sedkit sed-eval``)
- :mod:`~sed.metrics.curves`: learning curves and the over-/underfitting diagnosis
- :mod:`~sed.metrics.confusion`: confusion matrices and per-class tables
- :mod:`~sed.metrics.run_report`: the report of a run folder (``sedkit plot``) and of a k-fold root
"""

from sed.metrics.classification import ICBHIScore, icbhi_hits_counts, icbhi_score, icbhi_score_from_counts
from sed.metrics.confusion import (
    per_class_table,
    plot_confusion_matrix,
    read_confusion_csv,
    write_confusion_csv,
    write_per_class_csv,
)
from sed.metrics.curves import Diagnosis, diagnose, find_metrics_csv, plot_learning_curves, read_history
from sed.metrics.run_report import plot_kfold, plot_run
from sed.metrics.seld import (
    STARSS_NB_CLASSES,
    SELDMetrics2023,
    SELDMetrics2024,
    great_circle_deg,
    jackknife_estimate,
)
from sed.metrics.seld_eval import evaluate_dirs, format_results

__all__ = [
    "STARSS_NB_CLASSES",
    "Diagnosis",
    "ICBHIScore",
    "SELDMetrics2023",
    "SELDMetrics2024",
    "diagnose",
    "evaluate_dirs",
    "find_metrics_csv",
    "format_results",
    "great_circle_deg",
    "icbhi_hits_counts",
    "icbhi_score",
    "icbhi_score_from_counts",
    "jackknife_estimate",
    "per_class_table",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "plot_kfold",
    "plot_run",
    "read_confusion_csv",
    "read_history",
    "write_confusion_csv",
    "write_per_class_csv",
]
