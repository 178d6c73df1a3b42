"""Any checkpoint source(s) -> the predictor that scores audio: one
:class:`~sed.inference.classifier.Classifier`, or an :class:`~sed.inference.ensemble.EnsembleClassifier`
of several (what ``sedkit classify`` and ``sedkit serve`` build from their ``--checkpoint``,
``--ensemble`` and ``--weights``)."""

from __future__ import annotations

from collections.abc import Sequence

from sed.inference.classifier import Classifier, Predictor
from sed.inference.ensemble import EnsembleClassifier
from sed.inference.ensemble_weights import ensemble_options

__all__ = ["load_predictor"]


def load_predictor(
    checkpoints: Sequence[str],
    ensemble: str | None = None,
    weights: str | Sequence[float] | None = None,
    device: str = "auto",
    precision: str = "fp32",
    member: type[Classifier] = Classifier,
) -> Predictor:
    """The ``member`` classifier of one checkpoint, or the ensemble (method ``ensemble``, ``weights`` as
    :func:`~sed.inference.ensemble_weights.ensemble_options` reads them) of several. The options are
    checked before any checkpoint loads; a source that cannot be loaded is its SedError, options or members
    that do not fit together a ValueError (one line each)."""
    if ensemble is None and (len(checkpoints) > 1 or weights is not None):
        raise ValueError(
            "several checkpoints (or weights) need an ensemble method: vote, average, weighted or rank"
        )
    if ensemble is not None and len(checkpoints) < 2:
        raise ValueError("an ensemble needs at least two checkpoints")
    opts = ensemble_options(ensemble, weights, checkpoints) if ensemble else {}
    members = [member.from_pretrained(c, device=device, precision=precision) for c in checkpoints]
    return EnsembleClassifier(members, ensemble, **opts) if ensemble else members[0]
