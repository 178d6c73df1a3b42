"""Text prototypes in enrolment (``sedkit enroll --text``): classes named by sentences, alone or with audio.

A class given by text has the *text prototype* of :func:`sed.models.zeroshot.text_prototypes` (the unit mean
of its descriptions' CLAP text embeddings); a class given by audio the mean of its support embeddings (as
always); a class given by both :func:`sed.models.zeroshot.combine` of the two, ``w * t + (1 - w) * a`` of
the unit text prototype and the unit audio mean (``w`` the text weight, 0.5 by default). :func:`parse_text`
reads the ``"label=description"`` specs of the command line (a spec without ``=`` is the label itself,
prompted with the template as zero-shot classification prompts it); :func:`same_tower` checks that a
checkpoint's backbone is that audio tower (text prototypes of one CLAP model are meaningless in another's
embedding); :func:`mix` builds the new classes' prototypes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from sed.errors import short
from sed.models.pretrained.clap import ClapText
from sed.models.zeroshot import DEFAULT_TEMPLATE, combine, prompts, text_prototypes

__all__ = ["mix", "parse_text", "same_tower"]


def parse_text(specs: Sequence[str], template: str = DEFAULT_TEMPLATE) -> dict[str, list[str]]:
    """``{label: [descriptions]}`` of ``"label=description"`` specs, in first-seen label order; the text
    after the first ``=`` is the description as it is (no template), several specs of one label are several
    descriptions. A spec without ``=`` is the label alone: its description is ``template`` of the label.
    ValueError (one line) for an empty label or description, or a description given twice."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        label, sep, desc = str(spec).partition("=")
        label, desc = label.strip(), desc.strip()
        if not label:
            raise ValueError(f"text {short(spec)} names no label (give 'label=description' or 'label')")
        if sep and not desc:
            raise ValueError(
                f"text {short(spec)} has an empty description (give 'label=description', or the label alone "
                "for the template)"
            )
        desc = desc if sep else prompts([label], template)[0]
        if desc in out.get(label, []):
            raise ValueError(f"text {short(spec)}: the description of {short(label)} is given twice")
        out.setdefault(label, []).append(desc)
    if not out:
        raise ValueError("give at least one text description")
    return out


def same_tower(backbone: nn.Module, tower: nn.Module, what: str, source) -> None:
    """ValueError (one line) unless ``backbone`` is ``tower`` (same model, kwargs and weights): ``what``'s
    embedding must be the CLAP model ``source``'s for its text prototypes to mean anything there."""
    a, b = getattr(backbone, "sed_config", {}), getattr(tower, "sed_config", {})
    sa, sb = backbone.state_dict(), tower.state_dict()
    same = (
        a.get("name") == b.get("name")
        and a.get("kwargs") == b.get("kwargs")
        and sa.keys() == sb.keys()
        and all(sa[k].shape == sb[k].shape and torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)
    )
    if not same:
        raise ValueError(
            f"{what} is not on the audio tower of {source} (another model or other weights): text "
            "prototypes of that CLAP model would not be in its embedding"
        )


def mix(
    audio: Mapping[str, torch.Tensor],
    text: ClapText | None,
    descriptions: Mapping[str, Sequence[str]] | None,
    weight: float,
) -> tuple[list[str], torch.Tensor, dict[str, str]]:
    """(class names, prototypes ``[C, D]``, ``{class: "audio" | "text" | "text+audio"}``) of the audio means
    ``audio`` (``{class: [D]}``) and the text ``descriptions``: the audio classes in their order, then the
    classes with text only in theirs. A class with both is ``combine(text prototype, audio mean, weight)``."""
    descriptions = dict(descriptions or {})
    names = list(audio) + [c for c in descriptions if c not in audio]
    protos = dict(zip(descriptions, text_prototypes(text, descriptions))) if descriptions else {}
    rows, sources = [], {}
    for c in names:
        if c in audio and c in protos:
            rows.append(combine(protos[c][None], audio[c].float()[None], weight)[0])
            sources[c] = "text+audio"
        elif c in protos:
            rows.append(protos[c])
            sources[c] = "text"
        else:
            rows.append(audio[c].float())
            sources[c] = "audio"
    return names, torch.stack(rows), sources
