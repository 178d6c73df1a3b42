"""`sedkit sed-eval` on tiny score folders and event TSVs written here."""

import json

import numpy as np
import pytest

from sed.cli.main import main
from sed.metrics.detection import frame_scores
from sed.metrics.detection_io import write_events, write_scores

LABELS = ["dog", "cat"]
GT = {"a": [(1.0, 3.0, "dog"), (2.0, 4.0, "cat")], "b": [(0.0, 2.0, "cat")], "c": []}


@pytest.fixture
def files(tmp_path):
    write_events(GT, tmp_path / "gt.tsv", extension=".wav")
    (tmp_path / "durations.tsv").write_text("filename\tduration\na.wav\t6\nb.wav\t6\nc.wav\t6\n")
    scores = tmp_path / "scores"
    scores.mkdir()
    for key, events in GT.items():  # hop 0.5 s, perfect scores
        probs = np.full((12, 2), 0.1)
        for on, off, label in events:
            probs[int(on * 2) : int(off * 2), LABELS.index(label)] = 0.9
        write_scores(frame_scores(probs, 0.5, LABELS), scores / f"{key}.tsv")
    return tmp_path


def _run(capsys, *argv):
    code = main(["sed-eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_scores_folder_json_and_table(files, capsys):
    d = files
    code, out, err = _run(capsys, "--predictions", d / "scores", "--ground-truth", d / "gt.tsv", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert {
        k: r[k] for k in ("psds1", "psds2", "intersection_f1", "collar_f1", "segment_f1")
    } == pytest.approx(
        {"psds1": 1.0, "psds2": 1.0, "intersection_f1": 1.0, "collar_f1": 1.0, "segment_f1": 1.0}
    )
    assert r["files"] == 3 and set(r["classes"]) == set(LABELS)
    code, out, err = _run(
        capsys, "--predictions", d / "scores", "--ground-truth", d / "gt.tsv", "--per-class"
    )
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == [
        "class",
        "psds1",
        "psds2",
        "intersection_f1",
        "collar_f1",
        "segment_f1",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["macro", "dog", "cat"]
    assert "3 file(s), 2 classes" in err


def test_thresholds_per_class_change_the_f1(files, capsys):
    d = files
    (d / "thr.tsv").write_text("event_label\tthreshold\ndog\t0.95\ncat\t0.5\n")
    code, out, _ = _run(
        capsys,
        "--predictions",
        d / "scores",
        "--ground-truth",
        d / "gt.tsv",
        "--thresholds",
        d / "thr.tsv",
        "--json",
    )
    r = json.loads(out)
    assert code == 0 and r["classes"]["dog"]["collar_f1"] == 0.0 and r["classes"]["cat"]["collar_f1"] == 1.0
    assert r["psds1"] == pytest.approx(1.0)  # PSDS does not depend on thresholds
    (d / "thr.tsv").write_text("dog\t2\n")
    code, _, err = _run(
        capsys, "--predictions", d / "scores", "--ground-truth", d / "gt.tsv", "--thresholds", d / "thr.tsv"
    )
    assert code == 2 and "thr.tsv: line 1: threshold '2' is not in [0, 1]" in err


def test_events_give_the_f1s_only(files, capsys):
    d = files
    write_events({"a": [(1.0, 3.0, "dog")]}, d / "det.tsv", extension=".wav")
    code, out, err = _run(
        capsys,
        "--predictions",
        d / "det.tsv",
        "--ground-truth",
        d / "gt.tsv",
        "--durations",
        d / "durations.tsv",
        "--json",
    )
    r = json.loads(out)
    assert code == 0 and "psds1" not in r and "PSDS needs scores" in err
    assert r["collar_f1"] == pytest.approx((1.0 + 0.0) / 2)  # dog found, cat missed
    code, _, err = _run(
        capsys, "--predictions", d / "det.tsv", "--ground-truth", d / "gt.tsv", "--thresholds", "0.3"
    )
    assert code == 2 and "--thresholds applies to scores" in err


def test_a_bad_score_file_is_reported_and_left_out(files, capsys):
    d = files
    (d / "scores" / "b.tsv").write_text("onset\toffset\tdog\tcat\n0\t0.5\t0.1\tnan\n")
    code, out, err = _run(
        capsys,
        "--predictions",
        d / "scores",
        "--ground-truth",
        d / "gt.tsv",
        "--durations",
        d / "durations.tsv",
        "--json",
    )
    assert code == 1
    assert "b.tsv: line 2: a value is not finite" in err and "left out of the evaluation" in err
    assert json.loads(out)["files"] == 2


def test_a_class_without_ground_truth_is_noted(files, capsys):
    d = files
    write_events({"a": [(1.0, 3.0, "dog")]}, d / "gt.tsv", extension=".wav")
    code, out, err = _run(capsys, "--predictions", d / "scores", "--ground-truth", d / "gt.tsv", "--json")
    assert code == 0  # a note, not a failure
    assert "no ground-truth events of cat: left out of every metric" in err
    assert set(json.loads(out)["classes"]) == {"dog"}


def test_silent_files_and_input_errors(files, capsys):
    d = files
    (d / "scores" / "c.tsv").unlink()
    code, out, err = _run(
        capsys,
        "--predictions",
        d / "scores",
        "--ground-truth",
        d / "gt.tsv",
        "--durations",
        d / "durations.tsv",
        "--json",
    )
    assert code == 0 and "no scores for c; scored as silent" in err and json.loads(out)["files"] == 3
    (d / "scores" / "a.tsv").unlink()
    code, _, err = _run(capsys, "--predictions", d / "scores", "--ground-truth", d / "gt.tsv")
    assert code == 2 and "no scores for annotated file a (give durations" in err
    (d / "gt.tsv").write_text("filename\tonset\toffset\tevent_label\na.wav\t1\tx\tdog\n")
    code, _, err = _run(capsys, "--predictions", d / "scores", "--ground-truth", d / "gt.tsv")
    assert code == 2 and "gt.tsv: line 2: offset 'x' is not a number" in err
    assert "Traceback" not in err
