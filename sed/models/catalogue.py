"""The catalogue of families, sizes and declared public weights (``sedkit models``, docs/models.md's tables).

Everything here comes from the families' own declarations (:mod:`sed.models.family`); parameter counts
come from building each size on the meta device (no memory, no download, no network).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

from sed.models.family import Family, families, family
from sed.models.registry import create_model

__all__ = ["MARKERS", "catalogue", "parameter_count"]

#: docs/models.md's generated part lies between these two lines
MARKERS = ("<!-- sedkit models --format markdown: begin -->", "<!-- sedkit models --format markdown: end -->")


@cache
def parameter_count(size: str) -> int:
    """Parameters of a registered size with its default head (built on the meta device)."""
    with torch.device("meta"):
        model = create_model(size)
    return sum(p.numel() for p in model.parameters())


def _family_row(fam: Family) -> dict[str, Any]:
    sizes = [
        {"name": s, "parameters": None if fam.length_policy == "backbone" else parameter_count(s)}
        for s in fam.sizes
    ]
    return {
        "family": fam.name,
        "description": fam.description,
        "length_policy": fam.length_policy,
        "test_size": fam.test_size,
        "sizes": sizes,
        "weights": [w.row() for w in fam.weights],
    }


def catalogue(family_name: str | None = None) -> list[dict[str, Any]]:
    """One row per family (or the named one): sizes with parameter counts, length policy, weights."""
    chosen = [family(family_name)] if family_name else families()
    return [_family_row(f) for f in chosen]
