"""Reference fixtures of LAION-CLAP's original code (make_laion.py, README.md)."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
