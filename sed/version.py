"""The version of sed (one place: the package face, checkpoints and the CLI read it)."""

__version__ = "0.1.0"
