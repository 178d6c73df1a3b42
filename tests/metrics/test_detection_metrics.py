"""SED metrics (sed.metrics.detection) against hand counts, and against psds_eval / sed_eval run on the same
inputs (tests/reference/psds/: the fixtures and the script that made them in its own venv).

Where they differ by definition (stated in docs/detection.md too):
- PSDS: psds_eval evaluates the thresholds it is given; ours is exact over every operating point. The
  fixtures give psds_eval every operating point of the scores (quantised to 1/40), so both agree; psds_eval
  at the DCASE baseline's 50 thresholds is lower, recorded in the fixture as ``psds1_50``.
- segment F1: ours (and the DCASE one) is the macro average over classes; sed_eval's ``overall`` F is the
  micro average over segments: compared with sed_eval's class-wise average.
- sed_eval counts each overlapping detection of one class apart; thresholded scores never overlap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sed.errors import DatasetError
from sed.metrics.detection import (
    align,
    detection_metrics,
    detection_report,
    event_metrics,
    events_to_scores,
    frame_scores,
    psds,
)
from sed.metrics.detection_io import read_durations, read_events, read_scores, write_events, write_scores

REF = Path(__file__).resolve().parents[1] / "reference" / "psds"
LABELS = ["dog", "cat", "speech"]


def test_frame_scores_cover_the_frames():
    df = frame_scores(np.zeros((4, 3)), 0.5, LABELS, offset=10.0)
    assert list(df.columns) == ["onset", "offset", *LABELS]
    assert df["onset"].tolist() == [10.0, 10.5, 11.0, 11.5]
    assert df["offset"].tolist() == [10.5, 11.0, 11.5, 12.0]
    with pytest.raises(ValueError, match="do not fit 2 labels"):
        frame_scores(np.zeros((4, 3)), 0.5, LABELS[:2])
    with pytest.raises(ValueError, match="not a positive time"):
        frame_scores(np.zeros((4, 3)), 0.0, LABELS)


def test_events_to_scores_give_the_events_back():
    df = events_to_scores([(1.0, 2.5, "cat"), (2.0, 3.0, "cat"), (0.5, 1.0, "dog")], 4.0, LABELS)
    assert df["onset"].tolist() == [0.0, 0.5, 1.0, 2.0, 2.5, 3.0]
    assert df["cat"].tolist() == [0, 0, 1, 1, 1, 0]  # overlapping events of one class merge
    assert df["dog"].tolist() == [0, 1, 0, 0, 0, 0]


def _gt():
    gt = {"a": [(1.0, 3.0, "dog"), (2.0, 4.5, "cat")], "b": [(0.0, 1.2, "speech"), (5.0, 9.99, "dog")]}
    return gt, {"a": 10.0, "b": 10.0, "c": 10.0}


def test_perfect_scores_score_one_and_hand_counts():
    gt, durations = _gt()
    scores = {k: events_to_scores(gt.get(k, []), d, LABELS) for k, d in durations.items()}
    assert detection_metrics(scores, gt, durations) == pytest.approx(
        {"psds1": 1.0, "psds2": 1.0, "intersection_f1": 1.0, "collar_f1": 1.0, "segment_f1": 1.0}
    )
    # one dog found of two (P = 1, R = 1/2, F = 2/3), cat and speech missed: macro 2/9
    rep = event_metrics({"a": [(1.1, 2.9, "dog")]}, gt, durations, labels=LABELS, per_class=True)
    assert rep["classes"]["dog"]["collar_f1"] == pytest.approx(2 / 3)
    assert rep["macro"]["intersection_f1"] == pytest.approx(2 / 9)
    # segments: dog active in 1-3 and 5-10 (7 segments), found 1-3 (2): P = 1, R = 2/7, F = 4/9
    assert rep["classes"]["dog"]["segment_f1"] == pytest.approx(4 / 9)
    # the collar: an onset 0.25 s late misses it, the intersection criterion still holds
    late = event_metrics({"a": [(1.25, 3.0, "dog")]}, gt, durations, labels=LABELS, per_class=True)
    assert late["classes"]["dog"]["collar_f1"] == 0.0
    assert late["classes"]["dog"]["intersection_f1"] == pytest.approx(2 / 3)


def test_thresholds_per_class_and_files_without_scores():
    gt, durations = _gt()
    probs = {k: np.full((100, 3), 0.3) for k in durations}
    probs["a"][10:30, 0] = 0.7  # dog above 0.5 only
    scores = {k: frame_scores(p, 0.1, LABELS) for k, p in probs.items() if k != "c"}
    rep = detection_report(scores, gt, durations, thresholds={"dog": 0.5, "cat": 0.2, "speech": 0.9})
    assert rep["silent"] == ["c"]
    assert rep["classes"]["dog"]["collar_f1"] == pytest.approx(2 / 3)
    assert rep["classes"]["speech"]["collar_f1"] == 0.0
    assert rep["classes"]["cat"]["collar_f1"] == 0.0  # cat everywhere in a and b: one long false event
    with pytest.raises(ValueError, match="PSDS scenario 3 is not 1 or 2"):
        psds(scores, gt, durations, scenario=3)
    with pytest.raises(ValueError, match="no threshold for class speech"):
        detection_metrics(scores, gt, durations, thresholds={"dog": 0.5, "cat": 0.5})
    with pytest.raises(ValueError, match="no scores for annotated file"):
        align({"a": scores["a"]}, gt, None)
    with pytest.raises(ValueError, match="has no duration"):
        align(scores, gt, {"a": 10.0})
    with pytest.raises(ValueError, match="not one of the score classes"):
        align(scores, {"a": [(0.0, 1.0, "bird")]}, durations)


def test_classes_without_ground_truth_are_left_out():
    # sed_scores_eval asserts every class has reference events; such a class is left out and listed
    probs = np.full((20, 3), 0.1)
    probs[2:6, 0] = 0.9
    gt = {"a": [(1.0, 3.0, "dog")]}
    rep = detection_report({"a": frame_scores(probs, 0.5, LABELS)}, gt, {"a": 10.0})
    assert rep["unannotated"] == ["cat", "speech"] and list(rep["classes"]) == ["dog"]
    assert rep["macro"] == pytest.approx(
        {"psds1": 1.0, "psds2": 1.0, "intersection_f1": 1.0, "collar_f1": 1.0, "segment_f1": 1.0}
    )
    # one class left: PSDS2 without cross-triggers (sed_scores_eval fails on them). Found 1 s late: half
    # of the event, half of the detection: enough for PSDS2 (0.1), not for PSDS1 (0.7) nor the collar
    late = np.full((20, 3), 0.1)
    late[4:8, 0] = 0.9
    half = detection_report({"a": frame_scores(late, 0.5, LABELS)}, gt, {"a": 10.0})["macro"]
    assert half["psds1"] == 0.0 and half["psds2"] == pytest.approx(1.0) and half["collar_f1"] == 0.0
    assert half["intersection_f1"] == pytest.approx(1.0)  # 0.5 each way meets dtc = gtc = 0.5
    with pytest.raises(ValueError, match="no ground-truth events in the evaluated files"):
        psds({"a": frame_scores(probs, 0.5, LABELS)}, {"a": []}, {"a": 10.0})


def test_readers_name_file_and_line(tmp_path):
    # the rows are read by sed.data.corpora.desed (tested there); here what the metrics add
    f = tmp_path / "gt.tsv"
    f.write_text("filename\tonset\toffset\tevent_label\na.wav\t1\t2\tdog\na.wav\t2\t3\tdog\n")
    with pytest.raises(
        DatasetError, match=r"gt.tsv: 'a.wav': 'dog' events \[1, 2\] and \[2, 3\] overlap or touch"
    ):
        read_events(f)
    f.write_text("filename\tonset\toffset\tevent_label\na.wav\t1\t1\tdog\n")
    with pytest.raises(DatasetError, match="gt.tsv: 'a.wav': 'dog' event at 1 s does not last"):
        read_events(f)
    f.write_text("filename\tonset\toffset\tevent_label\na.wav\t1\t2\tdog\nb.wav\t\t\t\n")
    assert read_events(f) == {"a": [(1.0, 2.0, "dog")], "b": []}
    with pytest.raises(DatasetError, match="line 2: label 'dog' is not one of the 1 classes"):
        read_events(f, labels=["cat"])
    d = tmp_path / "durations.tsv"
    d.write_text("filename\tduration\na.wav\t10\n")
    assert read_durations(d) == {"a": 10.0}


def test_score_and_event_files_round_trip(tmp_path):
    df = frame_scores(np.random.default_rng(0).random((7, 3)), 0.064, LABELS)
    folder = tmp_path / "scores"
    folder.mkdir()
    write_scores(df, folder / "a.tsv")
    back = read_scores(folder)["a"]
    np.testing.assert_array_equal(back.to_numpy(), df.to_numpy())
    (folder / "b.tsv").write_text("onset\toffset\tdog\tcat\tspeech\n0\t1\t0.1\t0.2\tx\n")
    with pytest.raises(DatasetError, match=r"b.tsv: line 2: a value is not a number"):
        read_scores(folder)
    (folder / "b.tsv").write_text("onset\toffset\tdog\tcat\tspeech\n0\t1\t0\t0\t0\n1.5\t2\t0\t0\t0\n")
    with pytest.raises(DatasetError, match="line 3: onset 1.5 is not the previous frame's offset"):
        read_scores(folder)
    (folder / "b.tsv").write_text("onset\toffset\tdog\tcat\n0\t1\t0\t0\n")
    with pytest.raises(DatasetError, match="b.tsv: classes differ"):
        read_scores(folder)
    events = {"a": [(1.0, 2.0, "dog")], "b": []}
    write_events(events, tmp_path / "ev.tsv", extension=".wav")
    assert read_events(tmp_path / "ev.tsv") == {"a": [(1.0, 2.0, "dog")]}


FIXTURES = json.loads((REF / "fixtures.json").read_text())


def _case(name):
    case = FIXTURES["cases"][name]
    scores = {k: frame_scores(np.array(v), case["hop"], case["labels"]) for k, v in case["scores"].items()}
    gt = {k: [tuple(e) for e in v] for k, v in case["ground_truth"].items()}
    return case, scores, gt


def _runs(case, threshold):
    # thresholded events as a post-processor writes them: runs of frames strictly above the threshold
    out = {}
    for key, probs in case["scores"].items():
        active = np.asarray(probs) > threshold
        out[key] = []
        for c, label in enumerate(case["labels"]):
            edges = np.diff(np.concatenate([[0], active[:, c].astype(int), [0]]))
            for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
                out[key].append((s * case["hop"], e * case["hop"], label))
    return out


@pytest.mark.parametrize("name", sorted(FIXTURES["cases"]))
def test_equal_to_psds_eval_and_sed_eval(name):
    case, scores, gt = _case(name)
    ref = case["reference"]
    assert any(not evs for evs in gt.values())  # a file without events
    rep = detection_report(scores, gt, case["durations"], thresholds=0.5)
    for metric in ("psds1", "psds2", "intersection_f1", "collar_f1", "segment_f1"):
        assert rep["macro"][metric] == pytest.approx(ref[metric], abs=1e-3), metric
    assert 0.1 < ref["psds1"] < 0.9 and 0.1 < ref["collar_f1"] < 0.9  # the cases discriminate
    for label in case["labels"]:
        assert rep["classes"][label]["intersection_f1"] == pytest.approx(
            ref["intersection_f1_classes"][label], abs=1e-3
        )
        assert rep["classes"][label]["collar_f1"] == pytest.approx(ref["collar_f1_classes"][label], abs=1e-3)
        assert rep["classes"][label]["segment_f1"] == pytest.approx(
            ref["segment_f1_classes"][label], abs=1e-3
        )
    # the thresholded events alone give the same F1s
    f1 = event_metrics(_runs(case, 0.5), gt, case["durations"], labels=case["labels"])
    for metric in ("intersection_f1", "collar_f1", "segment_f1"):
        assert f1[metric] == pytest.approx(ref[metric], abs=1e-3), metric


def test_psds_eval_on_the_baseline_grid_is_lower():
    # by definition: psds_eval scores the thresholds it is given; 50 of them miss operating points
    ref = FIXTURES["cases"]["three_classes_hop_0.2"]["reference"]
    assert ref["psds2_50"] < ref["psds2"] - 0.05
    assert ref["segment_f1_micro"] != pytest.approx(ref["segment_f1"], abs=1e-4)  # sed_eval overall: micro
