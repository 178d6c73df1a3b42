"""How results are presented: the one table renderer (:func:`format_table`), predictions as tables, JSON lines
and CSV, the tables of ``ensemble-eval`` and ``fewshot-eval``, and where they go (stdout or an atomic file).
sed.inference and sed.training compute results; this module alone lays them out.

File names are data here, so they are kept, but every row stays one line: tables and CSV escape the
characters :func:`sed.errors.printable` escapes (JSON escapes them itself)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sed.errors import printable
from sed.fileio import atomic_open, derived_name


def format_table(rows: list[dict], columns: Sequence[str], markdown: bool = False) -> str:
    """An aligned plain-text table (numeric columns right-aligned), or with ``markdown`` a Markdown table (a
    ``| a | b |`` line per row under a ``|---|---|`` rule, no padding)."""

    def cell(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) else printable(str(v))

    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    if markdown:
        lines = [f"| {' | '.join(vals)} |" for vals in [list(columns), *cells]]
        return "\n".join([lines[0], "|" + "---|" * len(columns), *lines[1:]])
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(r.get(c), int | float) for r in rows) for c in columns]

    def line(vals):
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)
        ).rstrip()

    return "\n".join([line(list(columns))] + [line(r) for r in cells])


def _flat_rows(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (file or window, rank); names and labels escaped as in the table (each row one line)."""
    rows = []
    for p in predictions:
        if "error" in p:
            continue
        spans = [(w["start"], w["end"], w["top_k"]) for w in p.get("windows", [])]
        spans.append(("all" if p.get("windows") else "", "", p["top_k"]))
        for start, end, top in spans:
            for rank, t in enumerate(top, 1):
                rows.append(
                    {
                        "file": printable(p["file"]),
                        "start": start,
                        "end": end,
                        "rank": rank,
                        "label": printable(t["label"]),
                        "score": round(t["score"], 6),
                    }
                )
    return rows


def format_predictions(predictions: list[dict[str, Any]], fmt: str, aggregate: str = "mean") -> str:
    """``json``: one object per line and file (window mode: one per window, then the file's
    aggregate); ``csv``: ``file,start,end,rank,label,score``; ``table``: a line per file/window."""
    if fmt == "json":
        lines = []
        for p in predictions:
            if "error" in p:
                continue
            for w in p.get("windows", []):
                lines.append(
                    json.dumps(
                        {
                            "file": p["file"],
                            "start": round(w["start"], 3),
                            "end": round(w["end"], 3),
                            "top_k": w["top_k"],
                        }
                    )
                )
            obj = {"file": p["file"], "top_k": p["top_k"]}
            if p.get("windows"):
                obj["aggregate"] = aggregate
            lines.append(json.dumps(obj))
        return "\n".join(lines)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(
            buf, fieldnames=["file", "start", "end", "rank", "label", "score"], lineterminator="\n"
        )
        w.writeheader()
        w.writerows(_flat_rows(predictions))
        return buf.getvalue().rstrip("\n")
    if fmt == "table":
        rows = []
        for p in predictions:
            if "error" in p:
                continue
            for w in p.get("windows", []):
                rows.append(
                    {"file": p["file"], "span": f"{w['start']:.2f}-{w['end']:.2f}", "top": _top(w["top_k"])}
                )
            rows.append(
                {
                    "file": p["file"],
                    "span": aggregate if p.get("windows") else "clip",
                    "top": _top(p["top_k"]),
                }
            )
        return format_table(rows, ["file", "span", "top"])
    raise ValueError(f"unknown format {fmt!r}")


def _top(top_k: list[dict]) -> str:
    return "  ".join(f"{t['label']} {t['score']:.3f}" for t in top_k)


def format_ensemble_eval(table: dict[str, Any]) -> str:
    """:func:`~sed.training.ensemble_eval.ensemble_eval`'s result: a line naming the split and metric, then a
    row per member and per ensemble method (with its weights)."""
    key = table["metric"]
    rows = [
        {"": f"member {i}", "model": r["checkpoint"], key: r[key], "f1": r["f1"]}
        for i, r in enumerate(table["members"])
    ]
    rows += [
        {
            "": "ensemble",
            "model": r["method"],
            key: r[key],
            "f1": r["f1"],
            "weights": " ".join(f"{x:.3f}" for x in r.get("weights", [])),
        }
        for r in table["methods"]
    ]
    return f"split {table['split']} ({table['clips']} clips), metric {key}\n" + format_table(
        rows, ["", "model", key, "f1", "weights"]
    )


def format_kfold(rows: list[dict], summary: dict[str, dict[str, float]]) -> str:
    """:func:`~sed.training.kfold.run_kfold`'s result: a row per fold, then the mean and std rows."""
    keys = list(summary)
    table = [{"fold": str(r["fold"]), **{k: r.get(k, float("nan")) for k in keys}} for r in rows]
    table += [{"fold": stat, **{k: summary[k][stat] for k in keys}} for stat in ("mean", "std")]
    return format_table(table, ["fold", *keys])


#: how fewshot-eval's table names its methods
FEWSHOT_METHODS = {
    "prototype_cosine": "prototype (cosine)",
    "prototype_euclidean": "prototype (euclidean)",
    "logistic": "logistic probe",
    "zero_shot": "zero-shot (text)",
    "combined": "combined (text + prototype)",
}


def format_fewshot_eval(table: dict[str, Any]) -> str:
    """:func:`~sed.training.fewshot_eval.fewshot_eval`'s result: a line of the protocol, then a row per method
    (mean accuracy over the episodes and its 95 % interval)."""
    rows = [
        {
            "method": FEWSHOT_METHODS.get(r["method"], r["method"]),
            "accuracy": r["mean"],
            "95% interval": f"± {r['ci95']:.4f}",
        }
        for r in table["methods"]
    ]
    return (
        f"{table['ways']}-way {table['shots']}-shot, {table['queries']} queries per class, "
        f"{table['episodes']} "
        f"episodes (seed {table['seed']}); {table['clips']} clips of {table['classes']} classes\n"
        + (
            f"text: the class names (underscores as spaces) in '{table['template']}'; combined = "
            f"{table['text_weight']:g} * text + {1 - table['text_weight']:g} * support mean\n"
            if "text_weight" in table and "template" in table
            else ""
        )
        + format_table(rows, ["method", "accuracy", "95% interval"])
    )


def emit(text: str, output: str | os.PathLike | None) -> None:
    """Print to stdout, or write atomically to ``output``."""
    if output:
        with atomic_open(output, "w") as f:
            f.write(text + ("\n" if text else ""))
    else:
        if text:
            sys.stdout.write(text + "\n")


def embedding_names(out: str | os.PathLike) -> Path:
    """The file beside the embeddings ``out`` that names their rows: ``OUT.files.txt``."""
    out = Path(out)
    return out.with_name(derived_name(out.stem, ".files.txt"))


def write_embeddings(out: str | os.PathLike, embeddings, names: Sequence[str]) -> tuple[Path, Path]:
    """``embeddings`` ``[N, D]`` to the ``.npy`` ``out`` and the N row names, one per line, beside it
    (``OUT.files.txt``, names escaped as in the tables so each stays one line); both atomic."""
    import numpy as np

    out = Path(out)
    names_file = embedding_names(out)
    with atomic_open(out, "wb") as f:  # a file object: np.save would append .npy to a path without it
        np.save(f, np.asarray(embeddings, dtype=np.float32))
    with atomic_open(names_file) as f:
        f.write("".join(f"{printable(name)}\n" for name in names))
    return out, names_file
