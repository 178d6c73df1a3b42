"""How predictions are printed (sed.cli.report): every CSV row is one line, label names escaped as in the
table."""

from __future__ import annotations

import csv
import io

from sed.cli.report import format_predictions
from sed.errors import printable

HOSTILE_LABELS = ["dog", "new\nline", "\x1b[31mred", 'quo"te,comma', "bidi\u202eflip", "tab\there"]


def _predictions():
    top = [{"label": label, "score": 0.5} for label in HOSTILE_LABELS]
    return [
        {"file": "a\nb.wav", "top_k": top},
        {"file": "w.wav", "top_k": top[:2], "windows": [{"start": 0.0, "end": 1.0, "top_k": top[2:]}]},
        {"file": "bad.wav", "error": "bad.wav: not audio"},
    ]


def test_csv_escapes_label_names_as_the_table_does_and_quotes_with_the_csv_module():
    out = format_predictions(_predictions(), "csv")
    lines = out.split("\n")
    assert (
        len(lines) == 1 + len(HOSTILE_LABELS) + 2 + len(HOSTILE_LABELS) - 2
    )  # header, a.wav, w.wav's window + all
    assert all(
        line.isprintable() for line in lines
    )  # no newline, escape sequence or bidi control reaches a terminal
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["label"] for r in rows[: len(HOSTILE_LABELS)]] == [printable(label) for label in HOSTILE_LABELS]
    assert rows[0]["file"] == "a\\nb.wav" and rows[3]["label"] == 'quo"te,comma'  # quoted, read back whole
    table = format_predictions(_predictions(), "table")
    assert all(printable(label) in table for label in HOSTILE_LABELS)  # the same escaping as the table


def test_the_eval_tables_are_drawn_by_the_one_table_renderer():
    """ensemble-eval's and fewshot-eval's tables are format_table's (numbers right-aligned to 4 places), under
    a line of what was scored (issue 22: one renderer instead of three)."""
    from sed.cli.report import format_ensemble_eval, format_fewshot_eval, format_table

    ens = {
        "split": "val",
        "clips": 3,
        "metric": "acc",
        "members": [{"checkpoint": "a.pt", "acc": 0.5, "f1": 0.25}],
        "methods": [
            {"method": "average", "acc": 1.0, "f1": 1.0},
            {"method": "weighted", "acc": 0.5, "f1": 0.4, "weights": [0.25, 0.75]},
        ],
    }
    assert format_ensemble_eval(ens).splitlines() == [
        "split val (3 clips), metric acc",
        "          model        acc      f1  weights",
        "member 0  a.pt      0.5000  0.2500",
        "ensemble  average   1.0000  1.0000",
        "ensemble  weighted  0.5000  0.4000  0.250 0.750",
    ]
    few = {
        "ways": 2,
        "shots": 1,
        "queries": 3,
        "episodes": 4,
        "seed": 0,
        "clips": 9,
        "classes": 3,
        "methods": [
            {"method": "prototype_cosine", "mean": 0.75, "ci95": 0.125},
            {"method": "logistic", "mean": 0.5, "ci95": 0.0},
        ],
    }
    lines = format_fewshot_eval(few).splitlines()
    assert lines[0] == "2-way 1-shot, 3 queries per class, 4 episodes (seed 0); 9 clips of 3 classes"
    assert "\n".join(lines[1:]) == format_table(
        [
            {"method": "prototype (cosine)", "accuracy": 0.75, "95% interval": "± 0.1250"},
            {"method": "logistic probe", "accuracy": 0.5, "95% interval": "± 0.0000"},
        ],
        ["method", "accuracy", "95% interval"],
    )
    assert lines[2] == "prototype (cosine)    0.7500  ± 0.1250"


def test_the_kfold_table_is_a_row_per_fold_then_mean_and_std():
    from sed.cli.report import format_kfold

    text = format_kfold(
        [{"fold": 1, "test_acc": 0.5}, {"fold": 2, "test_acc": 1.0}],
        {"test_acc": {"mean": 0.75, "std": 0.353553}},
    )
    assert text.splitlines() == [
        "fold  test_acc",
        "1       0.5000",
        "2       1.0000",
        "mean    0.7500",
        "std     0.3536",
    ]
