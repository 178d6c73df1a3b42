"""Property-based fuzz tests of the text tables sed reads: clip manifests (CSV, TSV, JSONL), DCASE
SELD CSVs (``read_dcase_csv``) and the folders ``sedkit seld-eval`` scores.

Rows are drawn from plausible cells mixed with hostile ones (NaN, inf, 1e400, digits past
Python's int limit, fields past csv's size limit, NUL, quotes, newlines, escape sequences), the
bytes are then corrupted (invalid UTF-8, NUL, stray BOM and CR), and JSONL lines get nesting,
non-objects and JSON's ``NaN``/``Infinity``.

The invariant: a result that keeps the reader's promises (items whose labels index the label
list, finite times; events with integer indices and finite angles), or one
:class:`~sed.errors.DatasetError` line naming the file. ``seld-eval`` scores the good files, reports
each bad one in one line and never raises anything else.
"""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout

from hypothesis import example, given
from hypothesis import strategies as st

from sed.cli.main import main
from sed.data.corpora.dcase_csv import read_dcase_csv
from sed.data.corpora.folder import manifest_items
from sed.errors import DatasetError, printable
from sed.metrics.seld_eval import evaluate_dirs
from tests.fuzz.strategies import STEMS, corrupted, csv_text, odd_cells, outcome, scaled

# ---------------------------------------------------------------------- manifests
HEADERS = st.sampled_from(
    [
        ["path", "label"],
        ["path", "label", "start", "end", "fold"],
        ["label", "path", "fold"],
        ["path"],
        ["\ufeffpath", "label"],
        ["path", "label", "label"],
        [" path ", "label "],
        [],
    ]
)
PATHS = st.sampled_from(["a.wav", "sub/b.flac", "/abs/c.wav", "~/d.wav", "", " ", "a\nb.wav", "../e.wav"])
LABELS = st.sampled_from(["dog", "cat", "dog;cat", "dog;", ";", "", " dog "])
TIMES = st.sampled_from(["", "0", "0.5", "1", "2.5", "10"])
FOLDS = st.sampled_from(["", "1", "2", "5"])
CELL = {"path": PATHS, "label": LABELS, "start": TIMES, "end": TIMES, "fold": FOLDS}


@st.composite
def manifest_csv(draw) -> tuple[str, bytes]:
    header = draw(HEADERS)
    rows = [header]
    for _ in range(draw(st.integers(0, 5))):
        row = [
            draw(
                CELL.get(h.strip(), odd_cells) | odd_cells
                if draw(st.booleans())
                else CELL.get(h.strip(), PATHS)
            )
            for h in header
        ]
        extra = draw(st.integers(-1, 1))
        rows.append(row[:extra] if extra < 0 else row + [draw(odd_cells)] * extra)
    suffix = draw(st.sampled_from([".csv", ".tsv"]))
    text = csv_text(rows, "," if suffix == ".csv" else "\t", quoted=draw(st.booleans()))
    return suffix, draw(corrupted(text))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def manifest_line(draw) -> str:
    kind = draw(st.sampled_from(["row", "row", "row", "value", "text", "deep", "blank"]))
    if kind == "row":
        obj = {
            k: draw(st.one_of(JSON_VALUES, CELL[k], st.lists(LABELS, max_size=3)))
            for k in ("path", "label", "start", "end", "fold")
            if draw(st.integers(0, 4))
        }
        return json.dumps(obj)  # NaN and Infinity as JSON's extensions
    if kind == "value":
        return json.dumps(draw(JSON_VALUES))
    if kind == "deep":
        depth = draw(st.sampled_from([10, 1000, 100_000]))
        return "[" * depth + "]" * draw(st.sampled_from([0, depth]))
    return draw(st.text(max_size=20)).replace("\n", " ") if kind == "text" else ""


@st.composite
def manifest_jsonl(draw) -> tuple[str, bytes]:
    lines = draw(st.lists(manifest_line(), max_size=5))
    return draw(st.sampled_from([".jsonl", ".ndjson"])), draw(
        corrupted("".join(line + "\n" for line in lines))
    )


@example(manifest=(".jsonl", b"[" * 100_000 + b"\n"), stem="f", labels=None)  # found: RecursionError
@example(manifest=(".csv", b"\xffpath,label\n"), stem="f", labels=None)  # found: UnicodeDecodeError
@example(manifest=(".jsonl", b'{"path": "a.wav", "label": []}\n'), stem="f", labels=None)  # found: 0 classes
@given(
    manifest=manifest_csv() | manifest_jsonl(),
    stem=STEMS,
    labels=st.none() | st.just(["cat", "dog"]) | st.just(["dog"]),
)
def test_manifest_readers(scratch, manifest, stem, labels):
    suffix, data = manifest
    path = scratch() / f"{stem}{suffix}"
    path.write_bytes(data)
    result = outcome(lambda: manifest_items(path, labels), path)
    if isinstance(result, DatasetError):
        return
    items, names, multi = result
    assert items and names and len(set(names)) == len(names)
    for it in items:
        ids = it.label if multi else [it.label]
        assert all(isinstance(i, int) and 0 <= i < len(names) for i in ids), it
        assert isinstance(it.path, str) and it.path.strip()
        for t in (it.start, it.end):
            assert t is None or (isinstance(t, float) and math.isfinite(t) and t >= 0), it
        assert it.start is None or it.end is None or it.end > it.start
        assert it.fold is None or isinstance(it.fold, int)


# ---------------------------------------------------------------------- DCASE CSVs
INDEX = st.one_of(st.integers(0, 600).map(str), st.sampled_from(["0.0", "3.0", "1.5"]), odd_cells)
ANGLE = st.one_of(st.integers(-180, 180).map(str), st.floats(-400, 400).map(lambda v: f"{v:.2f}"), odd_cells)
COORD = st.one_of(st.floats(-1, 1).map(lambda v: f"{v:.4f}"), odd_cells)


@st.composite
def dcase_row(draw) -> list[str]:
    n = draw(st.sampled_from([4, 5, 6, 7, 7, 3, 8, 0]))
    head = [draw(INDEX), draw(st.integers(0, 12).map(str) | odd_cells)]
    if n == 7:
        return head + [draw(INDEX), draw(COORD), draw(COORD), draw(COORD), draw(COORD)]
    if n in (5, 6):
        return head + [draw(INDEX), draw(ANGLE), draw(ANGLE)] + ([draw(ANGLE)] if n == 6 else [])
    return (head + [draw(ANGLE), draw(ANGLE)])[:n] + [draw(odd_cells)] * (n == 8) * 4


@st.composite
def dcase_csv(draw) -> bytes:
    rows = draw(st.lists(dcase_row(), max_size=6))
    return draw(corrupted(csv_text(rows, quoted=draw(st.booleans()))))


def check_events(events) -> None:
    for e in events:
        assert all(isinstance(v, int) and v >= 0 for v in (e.frame, e.cls, e.track)), e
        assert math.isfinite(e.azimuth) and math.isfinite(e.elevation), e


@example(data=b"0,\x00" + b"9" * 5000 + b",0,0\n", stem="f")  # found: a 5,000-character error line
@example(data=b"0,0,inf,0\n" + b"x" * 200_000 + b"\n", stem="f")  # found: csv.Error, OverflowError
@given(data=dcase_csv(), stem=STEMS)
def test_dcase_csv_reader(scratch, data, stem):
    path = scratch() / f"{stem}.csv"
    path.write_bytes(data)
    result = outcome(lambda: read_dcase_csv(path), path)
    if not isinstance(result, DatasetError):
        check_events(result)


REF = "0,1,0,10,20,100\n3,2,0,-30,5,150\n9,1,1,170,-40,120\n"


@scaled(0.5)
@given(
    pred=dcase_csv(),
    ref=st.one_of(st.just(REF.encode()), dcase_csv()),
    stem=STEMS,
    year=st.sampled_from([2023, 2024]),
)
def test_seld_eval_scores_or_reports(scratch, pred, ref, stem, year):
    """``evaluate_dirs`` on a good pair and a fuzzed pair: the good file is scored, a bad file is one
    report line naming it; ``sedkit seld-eval`` exits 0, 1 (some file failed) or 2 (nothing to score)."""
    root = scratch()
    (root / "pred").mkdir()
    (root / "ref").mkdir()
    (root / "ref" / "good.csv").write_text(REF)
    (root / "pred" / "good.csv").write_text(REF)
    (root / "ref" / f"{stem}.csv").write_bytes(ref)
    (root / "pred" / f"{stem}.csv").write_bytes(pred)
    result = outcome(
        lambda: evaluate_dirs(root / "pred", root / "ref", year=year), root / "ref", root / "pred"
    )
    if isinstance(result, DatasetError):
        return
    results, report = result
    assert report["n_evaluated"] >= 1
    for err in report["errors"]:
        assert err.isprintable() and printable(str(root)) in err, err
    assert all(isinstance(v, float) for k, v in results.items() if k != "jackknife")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(
            [
                "seld-eval",
                "--pred",
                str(root / "pred"),
                "--ref",
                str(root / "ref"),
                "--year",
                str(year),
                "--json",
            ]
        )
    errors = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
    assert rc == (1 if report["errors"] else 0) and len(errors) == len(report["errors"]), (rc, err.getvalue())
    assert json.loads(out.getvalue()).keys() == results.keys()
