"""Any checkpoint source(s) -> the predictor that scores audio: one
:class:`~sed.inference.classifier.Classifier`, or an :class:`~sed.inference.ensemble.EnsembleClassifier`
of several (what ``sedkit classify`` and ``sedkit serve`` build from their ``--checkpoint``,
``--ensemble``, ``--weights`` and ``--labels``).

Zero-shot labels (classes named by text) go to every member whose source is a CLAP model (a ``clap-*``
short name, a hub id or directory of one): each becomes the zero-shot classifier of those labels. A member
that is an ordinary checkpoint (a sed checkpoint -- a saved zero-shot one too --, an ``.onnx`` file) keeps
its own classes, which must then be the same labels in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

from sed.errors import short
from sed.inference.classifier import Classifier, Predictor
from sed.inference.ensemble import EnsembleClassifier
from sed.inference.ensemble_weights import ensemble_options
from sed.models.zeroshot import DEFAULT_TEMPLATE, clap_source, prompts

__all__ = ["load_predictor"]


def _listed(labels: Sequence[str], most: int = 4) -> str:
    shown = ", ".join(short(str(lab)) for lab in labels[:most])
    return f"{shown}, ... ({len(labels)} in all)" if len(labels) > most else shown


def _check_classes(
    checkpoints: Sequence[str],
    members: Sequence[Classifier],
    zero_shot: Sequence[bool],
    labels: Sequence[str],
) -> None:
    """A one-line ValueError: an ordinary member, beside zero-shot ones, whose classes are not ``labels``."""
    for c, m, zs in zip(checkpoints, members, zero_shot):
        if not zs and list(m.labels) != list(labels):
            raise ValueError(
                f"{c}: its classes ({_listed(m.labels)}) are not the zero-shot labels ({_listed(labels)}); "
                "an ensemble member beside a CLAP model needs these labels, in this order"
            )


def load_predictor(
    checkpoints: Sequence[str],
    ensemble: str | None = None,
    weights: str | Sequence[float] | None = None,
    device: str = "auto",
    precision: str = "fp32",
    member: type[Classifier] = Classifier,
    labels: Sequence[str] | None = None,
    template: str = DEFAULT_TEMPLATE,
) -> Predictor:
    """The ``member`` classifier of one checkpoint, or the ensemble (method ``ensemble``, ``weights`` as
    :func:`~sed.inference.ensemble_weights.ensemble_options` reads them) of several. ``labels`` (each
    prompted with ``template``) are the zero-shot classes of every member whose source is a CLAP model
    (:func:`sed.models.zeroshot.clap_source`; the module docstring); when no member is one, the first says
    why it takes no labels. The options are checked before any checkpoint loads; a source that cannot be
    loaded is its SedError, options or members that do not fit together a ValueError (one line each)."""
    if ensemble is None and (len(checkpoints) > 1 or weights is not None):
        raise ValueError(
            "several checkpoints (or weights) need an ensemble method: vote, average, weighted or rank"
        )
    if ensemble is not None and len(checkpoints) < 2:
        raise ValueError("an ensemble needs at least two checkpoints")
    opts = ensemble_options(ensemble, weights, checkpoints) if ensemble else {}
    sources: list = [None] * len(checkpoints)  # per member: the CLAP source its labels load from, or None
    if labels is not None:
        prompts(labels, template)  # bad labels or template: before any checkpoint loads
        sources = [clap_source(c) for c in checkpoints]
        if all(s is None for s in sources):
            sources[0] = checkpoints[0]  # the first member refuses the labels in its own words
    zero_shot = [s is not None for s in sources]
    members = []
    for c, s in zip(checkpoints, sources):
        text = {"labels": list(labels), "template": template} if s is not None else {}
        members.append(
            member.from_pretrained(c if s is None else s, device=device, precision=precision, **text)
        )
    if labels is not None and ensemble:
        _check_classes(checkpoints, members, zero_shot, labels)
    return EnsembleClassifier(members, ensemble, **opts) if ensemble else members[0]
