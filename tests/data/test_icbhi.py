"""ICBHI cycles, splits and prepare (spec ast-patchmix-icbhi.md §2.1) on recordings written here."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from sed.data.corpora import icbhi
from sed.data.corpora.icbhi import IcbhiDataset
from sed.data.corpora.icbhi_prepare import format_icbhi_report, prepare_icbhi
from sed.data.synth.corpora import make_icbhi
from sed.errors import DatasetError

T, SR, FADE = 128000, 16000, 1000


def _write(root: Path, stem: str, x: np.ndarray, sr: int, rows) -> None:
    sf.write(root / f"{stem}.wav", x, sr, subtype="FLOAT")
    (root / f"{stem}.txt").write_text("".join(f"{s}\t{e}\t{c}\t{w}\n" for s, e, c, w in rows))


def _split(root: Path, entries: dict[str, str]) -> None:
    (root / "official_split.txt").write_text("".join(f"{k}\t{v}\n" for k, v in entries.items()))


def _faded(x: np.ndarray) -> np.ndarray:
    """The whole-recording linear fade, written out: ramps 0 -> 1 and 1 -> 0 over 1000 samples."""
    y = x.astype(np.float64).copy()
    y[:FADE] *= np.linspace(0.0, 1.0, FADE)
    y[-FADE:] *= np.linspace(1.0, 0.0, FADE)
    return y


def _repeat(seg: np.ndarray) -> np.ndarray:
    out = np.tile(seg, math.ceil(T / len(seg)))[:T]
    out[-FADE:] *= np.linspace(1.0, 0.0, FADE)
    return out


ROWS = [(0.0, 1.5, 0, 0), (2.0, 3.25, 1, 0), (9.0, 11.0, 1, 1), (0.5, 9.5, 0, 1), (10.5, 11.0, 0, 0)]


@pytest.fixture
def one(tmp_path):
    """One 10 s 16 kHz recording with known cycles: normal, crackle, both (runs past the end),
    wheeze (9 s long), and one that starts after the end."""
    x = np.random.default_rng(1).uniform(-0.5, 0.5, 10 * SR)
    _write(tmp_path, "101_1b1_Al_sc_Meditron", x, SR, ROWS)
    _split(tmp_path, {"101_1b1_Al_sc_Meditron": "train"})
    return tmp_path, x


def test_cycles_repeat_padded(one):
    root, x = one
    ds = IcbhiDataset(root, split="train")
    faded = _faded(x)
    assert len(ds) == 4 and ds.skipped == [(str(root / "101_1b1_Al_sc_Meditron.wav"), 4)]
    assert ds.labels == [0, 1, 3, 2] and ds.class_counts() == [1, 1, 1, 1]
    assert ds.label_names == ["normal", "crackle", "wheeze", "both"]
    for i, (s, e, _, _) in enumerate(ROWS[:4]):
        item = ds[i]
        assert set(item) == {"wave", "length", "label", "path", "patient", "cycle"}
        assert item["wave"].dtype == torch.float32 and item["wave"].shape == (T,) and item["length"] == T
        assert (item["patient"], item["cycle"], item["path"]) == (
            101,
            i,
            str(root / "101_1b1_Al_sc_Meditron.wav"),
        )
        seg = faded[min(int(s * SR), len(x)) : min(int(e * SR), len(x))]
        want = seg[:T] if len(seg) > T else _repeat(seg)
        np.testing.assert_allclose(item["wave"].numpy(), want, atol=1e-6)
    # the first cycle starts at 0: the whole-recording fade-in shows, first sample 0
    w = ds[0]["wave"].numpy()
    assert w[0] == 0.0 and np.allclose(w[1:FADE] / x[1:FADE], np.arange(1, FADE) / (FADE - 1), atol=1e-5)
    # the 9 s cycle is cut to its first 8 s, with no fade at the end
    assert ds[3]["wave"][-1] == pytest.approx(x[8000 + T - 1], abs=1e-6)
    # the cycle running past the end ends with the recording's fade-out, then is tiled
    assert len(faded[9 * SR :]) == SR and ds[2]["wave"][SR - 1] == 0.0
    two = IcbhiDataset(root, split="train", classes=2)
    assert (
        two.labels == [0, 1, 1, 1]
        and two.class_counts() == [1, 3]
        and two.label_names == ["normal", "abnormal"]
    )
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["wave"].shape == (2, T) and batch["label"].tolist() == [0, 1]


def test_cycles_zero_padded_centred(one):
    root, x = one
    ds = IcbhiDataset(root, split="train", pad="zero", cycle_seconds=4.0)
    target = 4 * SR
    seg = _faded(x)[2 * SR : int(3.25 * SR)]
    w = ds[1]["wave"].numpy()
    d = (target - len(seg)) // 2
    assert w.shape == (target,) and d == 22000
    np.testing.assert_allclose(w[d : d + len(seg)], seg, atol=1e-6)
    assert not w[:d].any() and not w[d + len(seg) :].any()


def test_load_recording_fade_and_resampling(tmp_path):
    t = np.arange(3 * 44100) / 44100
    _write(tmp_path, "102_1b1_Al_sc_Meditron", 0.5 * np.sin(2 * np.pi * 440 * t), 44100, [(0.1, 2.0, 0, 0)])
    x4 = 0.5 * np.sin(2 * np.pi * 300 * np.arange(3 * 4000) / 4000)
    _write(tmp_path, "103_1b1_Al_sc_Litt3200", x4, 4000, [(0.1, 2.0, 0, 0)])
    for stem, sr, freq in (("102_1b1_Al_sc_Meditron", 44100, 440), ("103_1b1_Al_sc_Litt3200", 4000, 300)):
        raw = torch.from_numpy(sf.read(tmp_path / f"{stem}.wav", dtype="float32")[0])
        w = icbhi.load_recording(tmp_path / f"{stem}.wav")
        want = _faded(torchaudio.transforms.Resample(sr, SR)(raw).numpy())  # as the reference
        assert w.shape == (math.ceil(3 * sr * SR / sr),) and w[0] == 0 and w[-1] == 0
        np.testing.assert_allclose(w.numpy(), want, atol=1e-6)
        spec = np.abs(np.fft.rfft(w.numpy()))
        assert abs(np.argmax(spec) * SR / len(w) - freq) < 1.0  # pitch kept: resampled, not relabelled
    _split(tmp_path, {"102_1b1_Al_sc_Meditron": "test", "103_1b1_Al_sc_Litt3200": "test"})
    ds = IcbhiDataset(tmp_path, split="test")
    seg = icbhi.load_recording(tmp_path / "102_1b1_Al_sc_Meditron.wav")[1600:32000].numpy()
    np.testing.assert_allclose(ds[0]["wave"].numpy(), _repeat(seg), atol=1e-6)


def test_fix_length_edges():
    x = torch.arange(1.0, 6.0)
    assert icbhi.fix_length(x, 3).tolist() == [1, 2, 3]
    assert icbhi.fix_length(x, 12, fade=3).tolist() == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 0.5, 0]
    assert icbhi.fix_length(x, 9, "zero").tolist() == [0, 0, 1, 2, 3, 4, 5, 0, 0]
    for bad in ((torch.zeros(0), 4, "repeat"), (x, 4, "reflect")):
        with pytest.raises(ValueError):
            icbhi.fix_length(*bad)


def test_renamed_recordings_in_the_split(tmp_path):
    assert icbhi.name_aliases("101_1b1_Al_sc_AKGC417L") == ["101_1b1_Al_sc_Meditron"]
    assert icbhi.name_aliases("101_1b1_Al_sc_Meditron") == [
        "101_1b1_Al_sc_AKGC417L",
        "101_1b1_Al_sc_LittC2SE",
    ]
    assert icbhi.name_aliases("101_1b1_Al_sc_Litt3200") == []
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * SR)
    _write(tmp_path, "101_1b1_Al_sc_AKGC417L", x, SR, [(0.0, 1.0, 1, 0)])  # archive name on disk
    _write(tmp_path, "102_1b1_Ar_sc_Meditron", x, SR, [(0.0, 1.0, 0, 1)])  # renamed name on disk
    _write(tmp_path, "103_1b1_Ar_sc_Meditron", x, SR, [(0.0, 1.0, 0, 0)])  # listed as is
    _write(tmp_path, "103_1b1_Ar_sc_LittC2SE", x, SR, [(0.0, 1.0, 1, 1)])  # both forms listed: each its own
    _split(
        tmp_path,
        {
            "101_1b1_Al_sc_Meditron": "train",
            "102_1b1_Ar_sc_LittC2SE": "test",
            "103_1b1_Ar_sc_Meditron": "train",
            "103_1b1_Ar_sc_LittC2SE": "test",
        },
    )
    stems = icbhi.list_recordings(tmp_path)
    assert icbhi.recording_parts(tmp_path, stems) == {
        "101_1b1_Al_sc_AKGC417L": "train",
        "102_1b1_Ar_sc_Meditron": "test",
        "103_1b1_Ar_sc_LittC2SE": "test",
        "103_1b1_Ar_sc_Meditron": "train",
    }
    train = IcbhiDataset(tmp_path, split="train", val_fraction=0.0)
    test = IcbhiDataset(tmp_path, split="test")
    assert train.recordings == ["101_1b1_Al_sc_AKGC417L", "103_1b1_Ar_sc_Meditron"] and train.labels == [1, 0]
    assert test.recordings == ["102_1b1_Ar_sc_Meditron", "103_1b1_Ar_sc_LittC2SE"] and test.labels == [2, 3]
    rep = prepare_icbhi(tmp_path)
    assert rep["renamed"] == 2 and rep["problems"] == []
    assert rep["splits"]["train"]["cycles"] == [1, 1, 0, 0] and rep["splits"]["test"]["cycles"] == [
        0,
        0,
        1,
        1,
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("icbhi")
    return make_icbhi(root, seed=3, num_patients=10, recordings_per_patient=1, duration=5.0)


def _patients(stems):
    return {icbhi.parse_recording_name(s).patient for s in stems}


def test_patient_folds_and_validation_split(corpus):
    root = Path(corpus["root"])
    folds = icbhi.read_patient_folds(root / "patient_list_foldwise.txt")
    everything = icbhi.list_recordings(root)
    for k in range(5):
        test = icbhi.split_recordings(root, "test", fold=k)
        train = icbhi.split_recordings(root, "train", fold=k, val_fraction=0.0)
        assert _patients(test) == {p for p, f in folds.items() if f == k} and test
        assert sorted(train + test) == everything and not _patients(train) & _patients(test)
    assert icbhi.split_recordings(root, "test", fold="2") == icbhi.split_recordings(root, "test", fold=2)
    official = icbhi.read_official_split(root / "official_split.txt")
    full = icbhi.split_recordings(root, "train", val_fraction=0.0)
    assert full == sorted(s for s, p in official.items() if p == "train") and len(_patients(full)) == 6
    train, val = (icbhi.split_recordings(root, s, val_fraction=0.34, seed=5) for s in ("train", "val"))
    assert sorted(train + val) == full and len(_patients(val)) == 2 and not _patients(train) & _patients(val)
    assert val == icbhi.split_recordings(root, "val", val_fraction=0.34, seed=5)  # deterministic
    seeds = {tuple(icbhi.split_recordings(root, "val", seed=s)) for s in range(6)}
    assert len(seeds) > 1 and all(len(_patients(v)) == 1 for v in seeds)
    # select_on_test reproduces the published protocol: val is the test split, train keeps everything
    assert icbhi.split_recordings(root, "val", select_on_test=True) == icbhi.split_recordings(root, "test")
    assert icbhi.split_recordings(root, "train", select_on_test=True) == full
    with pytest.raises(ValueError, match="select_on_test"):
        icbhi.split_recordings(root, "val", val_fraction=0.0)
    for bad in (dict(fold=5), dict(fold="x"), dict(split="dev")):
        with pytest.raises(ValueError):
            icbhi.split_recordings(root, **{"split": "train", **bad})


def test_dataset_and_prepare_count_the_annotations(corpus):
    root = Path(corpus["root"])
    want = {"train": Counter(), "test": Counter()}
    for rec in corpus["recordings"]:
        want[rec["split"]].update(c + 2 * w for _, _, c, w in rec["cycles"])
    rep = prepare_icbhi(root)
    assert rep["problems"] == [] and rep["recordings"] == 10 and rep["patients"] == 10
    assert rep["sample_rates"].keys() <= {4000, 44100} and rep["renamed"] == 0
    for part in ("train", "test"):
        assert rep["splits"][part]["cycles"] == [want[part][k] for k in range(4)]
    assert rep["splits"]["all"]["cycles"] == corpus["label_counts"]
    folds = icbhi.read_patient_folds(root / "patient_list_foldwise.txt")
    assert sorted(rep["folds"]) == [0, 1, 2, 3, 4]
    for k, f in rep["folds"].items():
        test = Counter(
            c + 2 * w for r in corpus["recordings"] if folds[r["patient"]] == k for _, _, c, w in r["cycles"]
        )
        assert f["test"]["cycles"] == [test[j] for j in range(4)]
        assert [a + b for a, b in zip(f["train"]["cycles"], f["test"]["cycles"])] == corpus["label_counts"]
    text = format_icbhi_report(rep)
    assert "10 recordings" in text and "no problems found" in text and "fold4 test" in text
    train = IcbhiDataset(root, "train", val_fraction=0.0)
    assert train.class_counts() == rep["splits"]["train"]["cycles"]
    assert IcbhiDataset(root, "test", classes=2).class_counts() == [
        want["test"][0],
        sum(want["test"].values()) - want["test"][0],
    ]


def test_prepare_lists_every_problem(corpus, tmp_path):
    src = Path(corpus["root"])
    stems = icbhi.list_recordings(src)
    for p in src.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / f"{stems[0]}.txt").unlink()  # recording without annotations
    (tmp_path / f"{stems[1]}.txt").write_text("0.5\t0.2\t0\t0\n")  # end before start
    (tmp_path / "999_1b1_Al_sc_Meditron.txt").write_text("0\t1\t0\t0\n")  # annotations without recording
    (tmp_path / "bad_name.wav").write_bytes((src / f"{stems[2]}.wav").read_bytes())
    (tmp_path / f"{stems[3]}.wav").write_bytes(b"RIFF")  # unreadable audio
    lines = (tmp_path / "official_split.txt").read_text().splitlines()
    kept = [ln for ln in lines if not ln.startswith(stems[4])] + ["150_1b1_Al_sc_Meditron\ttest"]
    (tmp_path / "official_split.txt").write_text("\n".join(kept) + "\n")
    folds = (tmp_path / "patient_list_foldwise.txt").read_text().splitlines()
    gone = icbhi.parse_recording_name(stems[5]).patient
    (tmp_path / "patient_list_foldwise.txt").write_text(
        "\n".join(f for f in folds if int(f.split()[0]) != gone)
    )
    with pytest.raises(DatasetError) as err:
        prepare_icbhi(tmp_path)
    problems = err.value.problems
    assert len(problems) == 8, "\n".join(problems)
    checks = [
        (stems[0], "no annotation file"),
        (stems[1], "line 1"),
        ("999_1b1_Al_sc_Meditron", "without recording"),
        ("bad_name", "not an ICBHI recording name"),
        (stems[3], "readable"),
        (stems[4], "not listed"),
        ("150_1b1_Al_sc_Meditron", "no recording"),
        (f"patient {gone}", "not listed"),
    ]
    for name, reason in checks:
        assert any(name in p and reason in p for p in problems), (name, reason)
    assert "8 problem(s)" in str(err.value)
    rep = prepare_icbhi(tmp_path, strict=False)
    assert rep["problems"] == problems and "problems (8)" in format_icbhi_report(rep)
