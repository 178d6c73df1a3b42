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

import os
from collections.abc import Sequence
from pathlib import Path

from sed.errors import SedError, short
from sed.inference.classifier import Classifier, Predictor
from sed.inference.ensemble import EnsembleClassifier
from sed.inference.ensemble_weights import ensemble_options
from sed.inference.runtime import is_onnx
from sed.models.family import find_weights, weights_table
from sed.models.pretrained.build import claimed_by
from sed.models.pretrained.sources import HUB_ID, Contents, _read_json, resolve
from sed.models.zeroshot import DEFAULT_TEMPLATE, prompts

__all__ = ["is_clap_source", "load_predictor"]

#: the family whose models take text labels
CLAP = "clap"


def is_clap_source(source: str | os.PathLike) -> bool:
    """Whether ``source`` is a CLAP model, judged without reading its weights where it can: a directory by
    its ``config.json``, a short name or a declared hub id by its family; another hub id is resolved (the
    download is cached for the load that follows). A file is never one: a sed checkpoint (a saved zero-shot
    classifier too) and an ``.onnx`` graph hold no text tower."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file() or is_onnx(text):
        return False
    if path.is_dir():
        try:
            config = _read_json(path / "config.json", path)
        except SedError:
            return False  # not a model directory this can read: its load says why
        return config is not None and claimed_by(Contents(text, {}, config=config, directory=path)) == CLAP
    declared = find_weights(text)
    if declared is None and HUB_ID.match(text):
        hub = next((w for w in weights_table() if f"hf://{text}" in w.sources), None)
        declared = find_weights(hub.name) if hub else None
        if declared is None:
            try:
                return claimed_by(resolve(text)) == CLAP
            except SedError:
                return True  # cannot be fetched: the load with the labels says so in one line
    return declared is not None and declared[0].name == CLAP


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
    (:func:`is_clap_source`; the module docstring); when no member is one, the first says why it takes no
    labels. The options are checked before any checkpoint loads; a source that cannot be loaded is its
    SedError, options or members that do not fit together a ValueError (one line each)."""
    if ensemble is None and (len(checkpoints) > 1 or weights is not None):
        raise ValueError(
            "several checkpoints (or weights) need an ensemble method: vote, average, weighted or rank"
        )
    if ensemble is not None and len(checkpoints) < 2:
        raise ValueError("an ensemble needs at least two checkpoints")
    opts = ensemble_options(ensemble, weights, checkpoints) if ensemble else {}
    zero_shot = [False] * len(checkpoints)
    if labels is not None:
        prompts(labels, template)  # bad labels or template: before any checkpoint loads
        zero_shot = [is_clap_source(c) for c in checkpoints]
        if not any(zero_shot):
            zero_shot = [True]  # the first member refuses the labels in its own words
    members = []
    for c, zs in zip(checkpoints, zero_shot + [False] * len(checkpoints)):
        text = {"labels": list(labels), "template": template} if zs else {}
        members.append(member.from_pretrained(c, device=device, precision=precision, **text))
    if labels is not None and ensemble:
        _check_classes(checkpoints, members, zero_shot, labels)
    return EnsembleClassifier(members, ensemble, **opts) if ensemble else members[0]
