"""How predictions are printed (sed.inference.output): every CSV row is one line, label names escaped as in the table."""

from __future__ import annotations

import csv
import io

from sed.errors import printable
from sed.inference.output import format_predictions

HOSTILE_LABELS = ["dog", "new\nline", "\x1b[31mred", 'quo"te,comma', "bidi\u202eflip", "tab\there"]


def _predictions():
    top = [{"label": label, "score": 0.5} for label in HOSTILE_LABELS]
    return [{"file": "a\nb.wav", "top_k": top},
            {"file": "w.wav", "top_k": top[:2], "windows": [{"start": 0.0, "end": 1.0, "top_k": top[2:]}]},
            {"file": "bad.wav", "error": "bad.wav: not audio"}]


def test_csv_escapes_label_names_as_the_table_does_and_quotes_with_the_csv_module():
    out = format_predictions(_predictions(), "csv")
    lines = out.split("\n")
    assert len(lines) == 1 + len(HOSTILE_LABELS) + 2 + len(HOSTILE_LABELS) - 2  # header, a.wav, w.wav's window + all
    assert all(line.isprintable() for line in lines)  # no newline, escape sequence or bidi control reaches a terminal
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["label"] for r in rows[: len(HOSTILE_LABELS)]] == [printable(label) for label in HOSTILE_LABELS]
    assert rows[0]["file"] == "a\\nb.wav" and rows[3]["label"] == 'quo"te,comma'  # quoted, read back whole
    table = format_predictions(_predictions(), "table")
    assert all(printable(label) in table for label in HOSTILE_LABELS)  # the same escaping as the table
