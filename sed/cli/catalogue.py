"""``sedkit models``: the families, their sizes and the public weights they declare (works offline)."""

from __future__ import annotations

import argparse
import json

from sed.errors import UsageError


def cmd_models(args: argparse.Namespace, con) -> int:
    from sed.cli.report import format_table
    from sed.models.catalogue import catalogue, markdown

    try:
        rows = catalogue(args.family)
    except ValueError as e:
        raise UsageError(e) from None
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    elif args.format == "markdown":
        print(markdown(rows), end="")
    else:
        sizes = [{"family": r["family"], "size": s["name"], "parameters": s["parameters"] or "-",
                  "length": r["length_policy"]} for r in rows for s in r["sizes"]]
        print(format_table(sizes, ["family", "size", "parameters", "length"]))
        weights = [{"short name": w["name"], "size": w["arch"], "classes": w["classes"] or "-",
                    "rate": w["sample_rate"], "published": w["metric"]} for r in rows for w in r["weights"]]
        if weights:
            print()
            print(format_table(weights, ["short name", "size", "classes", "rate", "published"]))
    return 0


def add_verbs(sub) -> None:
    p = sub.add_parser("models", help="model families, sizes (parameters) and public weights (short names)")
    p.add_argument("--family", default=None, help="one family (ast, beats, ced, efficientat, cnn, tcn, ...)")
    p.add_argument("--format", choices=["table", "json", "markdown"], default="table",
                   help="table, json (every declared field) or markdown (docs/models.md's tables)")
    p.set_defaults(run=cmd_models)
