"""`sedkit index` and `sedkit search` end to end on a tiny CLAP directory: a bar of files, bad files one line
each (exit 1, the rest indexed), a rerun that skips, the planted file first, every output format, and the
usage errors of one line (exit 2)."""

import csv
import io
import json

import numpy as np
import pytest
import soundfile as sf

from sed.cli.main import Console
from sed.inference.search import Index
from tests.models.clap_dir import make_clap_dir
from tests.sedkit_run import run

SR = 16000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("search_cli")
    clap = make_clap_dir(root / "clap", small=True)
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        t = np.arange(int((0.5 + 0.2 * i) * SR)) / SR
        wave = 0.3 * np.sin(2 * np.pi * (300 + 400 * i) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(audio / f"a{i}.wav", wave, SR, subtype="FLOAT")
    sf.write(audio / "long.wav", rng.uniform(-0.3, 0.3, int(2.5 * SR)), SR, subtype="FLOAT")
    (audio / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return root, clap, audio


def test_index_reports_a_bad_file_in_one_line_and_a_rerun_skips(setup, capsys, monkeypatch):
    root, clap, audio = setup
    bars = []

    def progress(self, iterable, total=None, desc="", done=None, unit="file"):
        bar = {"desc": desc, "total": total, "done": 0}
        bars.append(bar)
        for item in iterable:
            bar["done"] = done(item) + 1
            yield item

    monkeypatch.setattr(Console, "progress", progress)
    code, out, err = run(capsys, "index", audio, "--checkpoint", clap, "--out", root / "idx")
    lines = err.splitlines()
    assert code == 1 and out == "" and bars == [{"desc": "index", "total": 6, "done": 6}]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: {audio / 'broken.wav'}: not a readable audio file"
    )
    assert lines[-1] == f"indexed 5 files (8 windows), 0 unchanged skipped: 8 windows in {root / 'idx'}"
    index = Index.load(root / "idx")
    assert len(index) == 8 and sorted(index.files) == sorted(str(p) for p in audio.glob("[al]*.wav"))

    code, out, err = run(capsys, "index", audio, "--checkpoint", clap, "--out", root / "idx")
    assert code == 1 and err.count("error:") == 1
    assert (
        err.splitlines()[-1]
        == f"indexed 0 files (0 windows), 5 unchanged skipped: 8 windows in {root / 'idx'}"
    )


def test_search_lists_the_planted_file_first_in_every_format(setup, capsys):
    root, clap, audio = setup
    if not (root / "idx").exists():
        run(capsys, "index", audio, "--checkpoint", clap, "--out", root / "idx")
    code, out, err = run(
        capsys, "search", "--audio", audio / "a2.wav", "--index", root / "idx", "--format", "json"
    )
    hits = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and err == "" and len(hits) == 5 and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["file"] == str(audio / "a2.wav") and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert (hits[0]["start"], hits[0]["end"]) == (0.0, 0.9)

    api = Index.load(root / "idx").search("dog barking", top_k=3)
    code, out, _ = run(
        capsys, "search", "dog barking", "--index", root / "idx", "--top-k", "3", "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [(r["rank"], r["file"], float(r["start"])) for r in rows] == [
        (str(h.rank), h.file, h.start) for h in api
    ]
    assert [float(r["score"]) for r in rows] == pytest.approx([h.score for h in api], abs=1e-6)

    code, out, _ = run(
        capsys, "search", "dog barking", "--index", root / "idx", "--all-windows", "--top-k", "100"
    )
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["rank", "score", "file", "span"] and len(lines) == 1 + 8
    assert sorted(line.split()[3] for line in lines[1:] if "long.wav" in line) == [
        "0.00-1.00",
        "1.00-2.00",
        "2.00-2.50",
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "--index", "{idx}"], "error: give a text query"),
        (
            ["search", "x", "--audio", "{audio}/a0.wav", "--index", "{idx}"],
            "error: give a text query or --audio",
        ),
        (["search", "x", "--index", "{audio}"], "is not a search index (no meta.json"),
        (
            ["search", "--audio", "{audio}/broken.wav", "--index", "{idx}"],
            "broken.wav: not a readable audio file",
        ),
        (["index", "{audio}/a0.wav", "--checkpoint", "{audio}/a1.wav", "--out", "{root}/x"], "a1.wav"),
        (["index", "{audio}/a0.wav", "--checkpoint", "{audio}", "--out", "{idx}"], "is an index of"),
        (
            ["index", "{audio}/a0.wav", "--checkpoint", "{clap}", "--out", "{idx}", "--hop", "0.5"],
            "--hop is 1 s",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(setup, capsys, argv, message):
    root, clap, audio = setup
    if not (root / "idx").exists():
        run(capsys, "index", audio, "--checkpoint", clap, "--out", root / "idx")
    fill = {"idx": root / "idx", "audio": audio, "root": root, "clap": clap}
    code, out, err = run(capsys, *(a.format(**fill) for a in argv))
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and message in err, err


def test_an_index_of_only_bad_files_is_empty_and_searching_it_says_so(setup, capsys, tmp_path):
    root, clap, audio = setup
    code, _, err = run(capsys, "index", audio / "broken.wav", "--checkpoint", clap, "--out", tmp_path / "idx")
    assert code == 1 and err.count("error:") == 1 and "indexed 0 files (0 windows)" in err
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["meta.json"]
    code, out, err = run(capsys, "search", "dog", "--index", tmp_path / "idx")
    assert (code, out) == (
        0,
        "",
    ) and err == f"note: {tmp_path / 'idx'} holds no entries yet (sedkit index adds them)\n"
