"""Training wiring: LightningCLI (``sedkit fit|validate|test|predict``), k-fold runs, the demo."""

from sed.training.demo import run_demo
from sed.training.kfold import run_kfold, summarize
from sed.training.lightning_cli import SedLightningCLI, make_cli, run_lightning

__all__ = ["SedLightningCLI", "make_cli", "run_demo", "run_kfold", "run_lightning", "summarize"]
