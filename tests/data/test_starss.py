"""STARSS metadata readers, ADPIT targets (seld.md 3.1), prepare_starss and StarssDataset."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.audio.ambisonics import polar_to_cartesian
from sed.audio.features import FOALogMelIV
from sed.audio.io import load_audio
from sed.augment.acs import ACSExpandedDataset
from sed.data.corpora import starss
from sed.data.corpora.dcase_csv import SeldEvent
from sed.data.modules.feature_cache import FeatureCache
from sed.data.modules.seld_dataset import StarssDataset, collate
from sed.data.synth.corpora import make_starss
from sed.errors import DatasetError

C = 13


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("starss")
    return make_starss(root, seed=3, files_per_split=2, duration=20.0, num_classes=C)


def _xyz(az, el):
    return polar_to_cartesian(torch.tensor(float(az)), torch.tensor(float(el))).float()


def _baseline_adpit(events, nb_frames, nb_classes, dist=False):
    """Literal port of the loop of ``get_adpit_labels_for_file`` (seld-dcase2023 / DCASE2024)."""
    by_frame = {}
    for e in events:
        by_frame.setdefault(e.frame, []).append(e)
    lab = np.zeros((nb_frames, 6, 5 if dist else 4, nb_classes))
    for f, evs in by_frame.items():
        if f >= nb_frames:
            continue
        evs = sorted(evs, key=lambda e: e.cls)
        per_class = []
        for i, e in enumerate(evs):
            per_class.append(e)
            if i == len(evs) - 1 or e.cls != evs[i + 1].cls:
                slots = [0] if len(per_class) == 1 else [1, 2] if len(per_class) == 2 else [3, 4, 5]
                for s, ev in zip(slots, per_class):
                    x, y, z = _xyz(ev.azimuth, ev.elevation).tolist()
                    vals = [1, x, y, z] + ([ev.distance / 100.0] if dist else [])
                    lab[f, s, :, ev.cls] = vals
                per_class = []
    return torch.from_numpy(lab).float()


# ---------------------------------------------------------------- ADPIT


def test_adpit_single_pair_triple_and_four_of_a_class():
    ev = [SeldEvent(0, 4, 0, 30, 10, 150)]  # frame 0: one instance
    ev += [SeldEvent(1, 4, 0, 90, 0), SeldEvent(1, 4, 1, -90, 0)]  # frame 1: two
    ev += [SeldEvent(2, 4, k, 10 * k, 0) for k in range(3)]  # frame 2: three
    ev += [SeldEvent(3, 4, k, 20 * k, 5) for k in range(4)]  # frame 3: four -> first three kept
    t = starss.adpit_targets(ev, 5, C)
    assert t.shape == (5, 6, 4, C) and t.dtype == torch.float32
    assert torch.equal(
        t[:, :, 0, 4],
        torch.tensor(
            [[1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1], [0] * 6]
        ).float(),
    )
    assert torch.allclose(t[0, 0, 1:, 4], _xyz(30, 10))
    assert torch.allclose(t[1, 1, 1:, 4], _xyz(90, 0)) and torch.allclose(t[1, 2, 1:, 4], _xyz(-90, 0))
    for k in range(3):
        assert torch.allclose(t[2, 3 + k, 1:, 4], _xyz(10 * k, 0))
        assert torch.allclose(t[3, 3 + k, 1:, 4], _xyz(20 * k, 5))
    other = torch.ones(C, dtype=torch.bool)
    other[4] = False
    assert not t[..., other].any() and not t[4].any()


def test_adpit_mixed_classes_in_one_frame():
    # file order interleaves classes; within a class the file order is kept
    ev = [
        SeldEvent(7, 9, 0, 0, 0),
        SeldEvent(7, 2, 0, 45, 0),
        SeldEvent(7, 9, 1, 90, 0),
        SeldEvent(7, 0, 0, 1, 1),
        SeldEvent(7, 0, 1, 2, 2),
        SeldEvent(7, 0, 2, 3, 3),
        SeldEvent(7, 12, 0, -60, 30),
    ]
    t = starss.adpit_targets(ev, 10, C)
    act = t[7, :, 0]
    assert act[:, 2].tolist() == [1, 0, 0, 0, 0, 0] and act[:, 12].tolist() == [1, 0, 0, 0, 0, 0]
    assert act[:, 9].tolist() == [0, 1, 1, 0, 0, 0] and act[:, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(t[7, 1, 1:, 9], _xyz(0, 0)) and torch.allclose(t[7, 2, 1:, 9], _xyz(90, 0))
    assert torch.allclose(t[7, 5, 1:, 0], _xyz(3, 3)) and torch.allclose(t[7, 0, 1:, 12], _xyz(-60, 30))
    assert act.sum() == 7 and t[:7].abs().sum() == 0 and t[8:].abs().sum() == 0


def test_adpit_distance_window_and_dropped_frames():
    ev = [
        SeldEvent(2, 1, 0, 10, 20, 250),
        SeldEvent(2, 1, 1, -10, 0, 90),
        SeldEvent(5, 3, 0, 0, 0, 100),
        SeldEvent(9, 3, 0, 0, 0, 100),
    ]
    t = starss.adpit_targets(ev, 6, C, with_distance=True)
    assert t.shape == (6, 6, 5, C)
    assert t[2, 1, 4, 1].item() == pytest.approx(2.5) and t[2, 2, 4, 1].item() == pytest.approx(0.9)
    assert t[5, 0, :, 3].tolist() == pytest.approx([1, 1, 0, 0, 1.0], abs=1e-6)
    assert t[:, :, 0].sum() == 3  # frame 9 >= 6 frames: dropped
    full = starss.adpit_targets(ev, 10, C, with_distance=True)
    assert torch.equal(starss.adpit_targets(ev, 4, C, with_distance=True, start_frame=3), full[3:7])
    assert torch.equal(starss.adpit_targets(ev, 6, C), t[:, :, :4])
    with pytest.raises(DatasetError, match="distance"):
        starss.adpit_targets([SeldEvent(0, 1, 0, 0, 0)], 2, C, with_distance=True)
    with pytest.raises(DatasetError, match="class index 13"):
        starss.adpit_targets([SeldEvent(0, 13, 0, 0, 0)], 2, C)
    assert starss.adpit_targets([], 3, C).abs().sum() == 0


def test_adpit_matches_the_baseline_loop():
    rng = np.random.default_rng(0)
    ev = [
        SeldEvent(
            int(rng.integers(0, 40)),
            int(rng.integers(0, 4)),
            0,
            int(rng.integers(-180, 181)),
            int(rng.integers(-90, 91)),
            int(rng.integers(50, 500)),
        )
        for _ in range(400)
    ]
    for dist in (False, True):
        assert torch.allclose(
            starss.adpit_targets(ev, 35, 4, dist), _baseline_adpit(ev, 35, 4, dist), atol=1e-6
        )


# ---------------------------------------------------------------- readers


def test_readers_5_6_columns_and_tau(tmp_path):
    (tmp_path / "a.csv").write_text("3,1,2,-50,30\n3,1,0,10,-20\n\n4,12,0,180,0\n")
    (tmp_path / "b.csv").write_text("0,5,1,90,45,230\n1,5,1,91,45,231\n")
    lab = starss.read_starss_metadata(tmp_path / "a.csv")
    assert len(lab) == 3 and lab.frame.tolist() == [3, 3, 4] and lab.track.tolist() == [2, 0, 0]
    assert lab.azimuth.tolist() == [-50, 10, 180] and not lab.has_distance and lab.num_frames == 5
    assert lab.events()[0] == SeldEvent(3, 1, 2, -50.0, 30.0, None)
    assert lab.class_counts(C)[[1, 12]].tolist() == [2, 1]
    lab = starss.read_starss_metadata(tmp_path / "b.csv")
    assert lab.has_distance and lab.distance.tolist() == [230, 231] and lab.cls.tolist() == [5, 5]
    tau = starss.read_tau_metadata(tmp_path / "a.csv")
    assert tau.track.tolist() == [2, 0, 0] and np.isnan(tau.distance).all()
    with pytest.raises(DatasetError, match=r"b\.csv.*line 1.*TAU"):
        starss.read_tau_metadata(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("0,1,0,0,0\n1,1,10,20\n")
    with pytest.raises(DatasetError, match=r"c\.csv.*line 2.*5 or 6"):
        starss.read_starss_metadata(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("0,1,0,0,0\nx,1,0,0,0\n")
    with pytest.raises(DatasetError, match=r"d\.csv.*line 2"):
        starss.read_starss_metadata(tmp_path / "d.csv")


# ---------------------------------------------------------------- prepare_starss


def test_prepare_counts_match_the_metadata(corpus):
    report = starss.prepare_starss(corpus["root"])
    assert report["problems"] == [] and report["total"]["files"] == 4
    for fold in (3, 4):
        rows = [r for key, rs in corpus["labels"].items() if f"/fold{fold}_" in key for r in rs]
        counts = Counter(r[1] for r in rows)
        s = report["folds"][fold]
        assert s["files"] == 2 and s["duration"] == pytest.approx(40.0) and s["label_frames"] == 400
        assert s["event_frames"] == [counts[c] for c in range(C)]
        assert set(s["rooms"]) <= set(starss.TRAIN_ROOMS if fold == 3 else starss.TEST_ROOMS)
    text = starss.format_prepare_report(report)
    assert "no problems found" in text and "Female speech" in text
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("class"))
    assert len({len(line) for line in lines[head : head + 1 + C]}) == 1  # aligned columns
    assert str(report["total"]["event_frames"][0]) in lines[head + 1]


def test_prepare_lists_every_problem(corpus, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(corpus["root"], root)
    pairs = starss.list_starss_pairs(root)
    (wav0, csv0), (wav1, _), (wav2, _), (wav3, csv3) = pairs
    csv0.unlink()  # audio without metadata
    x, sr = sf.read(wav1)
    sf.write(wav1, x[:, :2], sr)  # 2 channels
    sf.write(wav2, x, 16000)  # wrong rate
    csv3.write_text(csv3.read_text() + "5,20,0,0,0,100\n")  # class out of range
    with pytest.raises(DatasetError) as err:
        starss.prepare_starss(root)
    problems = err.value.problems
    assert len(problems) == 4
    for path, what in (
        (wav0, "no metadata"),
        (wav1, "2 channel"),
        (wav2, "16000 Hz"),
        (csv3, "class index 20"),
    ):
        assert any(p.startswith(str(path)) and what in p for p in problems), (path, problems)
    assert str(wav0) in str(err.value) and str(csv3) in str(err.value)
    report = starss.prepare_starss(root, strict=False)
    assert report["problems"] == problems and "problems (4):" in starss.format_prepare_report(report)
    shutil.rmtree(root / "metadata_dev")
    report = starss.prepare_starss(root, strict=False)
    assert len(report["problems"]) == 1 and "metadata_dev: STARSS folder not found" in report["problems"][0]


# ---------------------------------------------------------------- StarssDataset


def test_train_sequences_audio_and_targets(corpus):
    ds = StarssDataset(corpus["root"], "dev-train")
    assert len(ds) == 8 and [ds[i]["start"] for i in range(4)] == [0.0, 5.0, 10.0, 15.0]
    item = ds[5]
    assert item["audio"].shape == (4, 120000) and item["audio"].dtype == torch.float32
    assert item["target"].shape == (50, 6, 4, C) and item["start"] == 5.0
    wave, _ = load_audio(item["file"])
    assert torch.equal(item["audio"], wave[:, 120000:240000])
    rows = corpus["labels"][f"dev-train-synth/{Path(item['file']).stem}"]
    frame, cls = next(
        (r[0], r[1]) for r in rows if 50 <= r[0] < 100 and sum(1 for q in rows if q[:2] == r[:2]) == 1
    )  # a frame with one event of its class
    az, el = next((r[3], r[4]) for r in rows if r[:2] == [frame, cls])
    assert item["target"][frame - 50, 0, 0, cls] == 1
    assert torch.allclose(item["target"][frame - 50, 0, 1:, cls], _xyz(az, el))
    assert item["target"][:, :, 0].sum() == sum(1 for r in rows if 50 <= r[0] < 100)
    assert [ds.files[i]["audio"] for i in range(2)] == [
        f["audio"] for f in StarssDataset(corpus["root"], [3]).files
    ]
    assert (
        len(StarssDataset(corpus["root"], [3, 4])) == 16
        and len(StarssDataset(corpus["root"], "dev-test")) == 8
    )
    item2 = ACSExpandedDataset(ds)[8 * 5]  # ACS row 0 (identity) of base item 5
    assert torch.equal(item2["audio"], item["audio"]) and torch.equal(item2["target"], item["target"])


def _truncated_corpus(corpus, tmp_path, seconds=12.34):
    root = tmp_path / "short"
    shutil.copytree(corpus["root"], root)
    wav = next(w for w, _ in starss.list_starss_pairs(root) if w.parent.name.startswith("dev-test"))
    x, sr = sf.read(wav, dtype="int16")
    sf.write(wav, x[: int(seconds * sr)], sr, subtype="PCM_16")
    return root, wav


def test_partial_sequence_dropped_eval_whole_files_and_collate(corpus, tmp_path):
    root, short = _truncated_corpus(corpus, tmp_path)
    train = StarssDataset(root, "dev-test", with_distance=True)
    assert len(train) == 4 + 2  # 200 and 123 label frames
    assert train[0]["target"].shape == (50, 6, 5, C)
    ev = StarssDataset(root, "dev-test", mode="eval", with_distance=True)
    assert len(ev) == 2
    items = {Path(it["file"]): it for it in (ev[0], ev[1])}
    assert items[short]["audio"].shape == (4, 123 * 2400) and items[short]["target"].shape[0] == 123
    long_item = next(it for p, it in items.items() if p != short)
    assert long_item["audio"].shape == (4, 480000) and long_item["target"].shape[0] == 200
    dist = long_item["target"][:, :, 4][long_item["target"][:, :, 0] > 0]
    assert dist.min() >= 1.0 and dist.max() <= 4.0  # synth distances 100-400 cm
    batch = collate([items[short], long_item])
    assert batch["audio"].shape == (2, 4, 480000) and batch["target"].shape == (2, 200, 6, 5, C)
    assert batch["label_frames"].tolist() == [123, 200] and batch["file"][0] == str(short)
    assert batch["audio"][0, :, 123 * 2400 :].abs().sum() == 0 and batch["target"][0, 123:].abs().sum() == 0
    assert torch.equal(batch["audio"][0, :, : 123 * 2400], items[short]["audio"])
    assert torch.equal(batch["target"][1], long_item["target"]) and batch["start"].tolist() == [0.0, 0.0]


def test_dataset_with_feature_cache(corpus, tmp_path):
    root, short = _truncated_corpus(corpus, tmp_path)
    cache = FeatureCache(tmp_path / "cache", FOALogMelIV())
    train = StarssDataset(root, "dev-test", cache=cache)
    i = next(
        i
        for i in range(len(train))
        if train.index[i][1] == 50 and train.files[train.index[i][0]]["audio"] != short
    )
    item = train[i]
    assert (
        "audio" not in item
        and item["features"].shape == (7, 250, 64)
        and item["target"].shape == (50, 6, 4, C)
    )
    full = cache.get(item["file"])
    assert full.shape == (7, 1000, 64) and torch.equal(item["features"], full[:, 250:500])
    assert torch.equal(item["target"], StarssDataset(root, "dev-test")[i]["target"])
    ev = StarssDataset(root, "dev-test", mode="eval", cache=cache)
    shapes = sorted(ev[i]["features"].shape[1] for i in range(2))
    assert shapes == [615, 1000]  # 123 label frames * 5
    batch = collate([ev[0], ev[1]])
    assert batch["features"].shape == (2, 7, 1000, 64) and sorted(batch["label_frames"].tolist()) == [
        123,
        200,
    ]


def test_dataset_errors(corpus, tmp_path):
    with pytest.raises(ValueError):
        StarssDataset(corpus["root"], "train")
    with pytest.raises(ValueError):
        StarssDataset(corpus["root"], mode="test")
    with pytest.raises(ValueError):
        StarssDataset(corpus["root"], sequence_seconds=0.25)
    with pytest.raises(DatasetError, match="class index"):
        StarssDataset(corpus["root"], num_classes=2)
    root = tmp_path / "c"
    shutil.copytree(corpus["root"], root)
    wav, csv = starss.list_starss_pairs(root)[0]
    csv.write_text("\n".join(",".join(line.split(",")[:5]) for line in csv.read_text().splitlines()) + "\n")
    with pytest.raises(DatasetError, match=f"{csv.name}.*distance"):
        StarssDataset(root, [3, 4], with_distance=True)
    assert math.isclose(StarssDataset(root, "dev-train")[0]["start"], 0.0)
