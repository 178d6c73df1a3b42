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

__all__ = ["MARKERS", "catalogue", "markdown", "parameter_count"]

#: docs/models.md's generated part lies between these two lines
MARKERS = ("<!-- sedkit models --format markdown: begin -->", "<!-- sedkit models --format markdown: end -->")

_POLICY = {"fixed": "fixed: padded or cut to the clip", "native": "native: each clip at its own length",
           "frames": "frames: the whole input, frame outputs", "backbone": "its backbone's"}


@cache
def parameter_count(size: str) -> int:
    """Parameters of a registered size with its default head (built on the meta device)."""
    with torch.device("meta"):
        model = create_model(size)
    return sum(p.numel() for p in model.parameters())


def _family_row(fam: Family) -> dict[str, Any]:
    sizes = [{"name": s, "parameters": None if fam.length_policy == "backbone" else parameter_count(s)}
             for s in fam.sizes]
    return {"family": fam.name, "description": fam.description, "length_policy": fam.length_policy,
            "test_size": fam.test_size, "sizes": sizes, "weights": [w.row() for w in fam.weights]}


def catalogue(family_name: str | None = None) -> list[dict[str, Any]]:
    """One row per family (or the named one): sizes with parameter counts, length policy, weights."""
    chosen = [family(family_name)] if family_name else families()
    return [_family_row(f) for f in chosen]


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M" if n < 1e8 else f"{n / 1e6:.0f} M"


def markdown(rows: list[dict[str, Any]]) -> str:
    """Two tables: families (sizes, parameters, length policy) and the declared weights."""
    out = ["| family | sizes (parameters, default head) | length policy | what it is |", "|---|---|---|---|"]
    for r in rows:
        sizes = ", ".join(f"`{s['name']}` {_millions(s['parameters'])}" for s in r["sizes"])
        out.append(f"| {r['family']} | {sizes} | {_POLICY[r['length_policy']]} | {r['description']} |")
    out += ["", "| short name | builds | classes | multi-label | rate, clip | published | licence |",
            "|---|---|---|---|---|---|---|"]
    for r in rows:
        for w in r["weights"]:
            classes = "none (encoder)" if w["classes"] is None else f"{w['classes']} {w['label_set']}"
            out.append(f"| `{w['name']}` | `{w['arch']}` | {classes} | {'yes' if w['multi_label'] else 'no'} | "
                       f"{w['sample_rate'] // 1000} kHz, {w['clip_seconds']:g} s | {w['metric']}; {w['citation']} | "
                       f"{w['licence']} |")
    return "\n".join(out) + "\n"
