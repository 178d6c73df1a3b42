"""``sedkit models``: the families, their sizes and the public weights they declare (works offline)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sed.cli.report import format_table
from sed.errors import UsageError

#: how docs/models.md words a family's length policy
POLICY = {
    "fixed": "fixed: padded or cut to the clip",
    "native": "native: each clip at its own length",
    "frames": "frames: the whole input, frame outputs",
    "backbone": "its backbone's",
}


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M" if n < 1e8 else f"{n / 1e6:.0f} M"


def markdown(rows: list[dict[str, Any]]) -> str:
    """docs/models.md's two tables of :func:`~sed.models.catalogue.catalogue`'s rows (the one table renderer's
    Markdown): families (sizes, parameters, length policy) and the declared weights."""
    families = [
        {
            "family": r["family"],
            "sizes (parameters, default head)": ", ".join(
                f"`{s['name']}` {_millions(s['parameters'])}" for s in r["sizes"]
            ),
            "length policy": POLICY[r["length_policy"]],
            "what it is": r["description"],
        }
        for r in rows
    ]
    weights = [
        {
            "short name": f"`{w['name']}`",
            "builds": f"`{w['arch']}`",
            "classes": "none (encoder)" if w["classes"] is None else f"{w['classes']} {w['label_set']}",
            "multi-label": "yes" if w["multi_label"] else "no",
            "rate, clip": f"{w['sample_rate'] // 1000} kHz, {w['clip_seconds']:g} s",
            "published": f"{w['metric']}; {w['citation']}",
            "licence": w["licence"],
        }
        for r in rows
        for w in r["weights"]
    ]
    return (
        "\n\n".join(
            [
                format_table(
                    families,
                    ["family", "sizes (parameters, default head)", "length policy", "what it is"],
                    markdown=True,
                ),
                format_table(
                    weights,
                    ["short name", "builds", "classes", "multi-label", "rate, clip", "published", "licence"],
                    markdown=True,
                ),
            ]
        )
        + "\n"
    )


def cmd_models(args: argparse.Namespace, con) -> int:
    from sed.models.catalogue import catalogue

    try:
        rows = catalogue(args.family)
    except ValueError as e:
        raise UsageError(e) from None
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    elif args.format == "markdown":
        print(markdown(rows), end="")
    else:
        sizes = [
            {
                "family": r["family"],
                "size": s["name"],
                "parameters": s["parameters"] or "-",
                "length": r["length_policy"],
            }
            for r in rows
            for s in r["sizes"]
        ]
        print(format_table(sizes, ["family", "size", "parameters", "length"]))
        weights = [
            {
                "short name": w["name"],
                "size": w["arch"],
                "classes": w["classes"] or "-",
                "rate": w["sample_rate"],
                "published": w["metric"],
            }
            for r in rows
            for w in r["weights"]
        ]
        if weights:
            print()
            print(format_table(weights, ["short name", "size", "classes", "rate", "published"]))
    return 0


def add_verbs(sub) -> None:
    p = sub.add_parser("models", help="model families, sizes (parameters) and public weights (short names)")
    p.add_argument("--family", default=None, help="one family (ast, beats, ced, efficientat, cnn, tcn, ...)")
    p.add_argument(
        "--format",
        choices=["table", "json", "markdown"],
        default="table",
        help="table, json (every declared field) or markdown (docs/models.md's tables)",
    )
    p.set_defaults(run=cmd_models)
