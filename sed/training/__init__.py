"""Training wiring: LightningCLI (``sedkit fit|validate|test|predict``), k-fold runs, the demo, and evaluation
on a data split whose data module fit's parser builds (:func:`~sed.training.lightning_cli.build_datamodule`):
:mod:`~sed.training.ensemble_eval` (``sedkit ensemble-eval``), :mod:`~sed.training.fewshot_eval`
(``fewshot-eval``)."""

from sed.training.demo import run_demo
from sed.training.kfold import run_kfold, summarize
from sed.training.lightning_cli import SedLightningCLI, make_cli, run_lightning

__all__ = ["SedLightningCLI", "make_cli", "run_demo", "run_kfold", "run_lightning", "summarize"]
