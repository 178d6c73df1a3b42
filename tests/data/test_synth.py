"""Synthetic corpora (sed.data.synth.corpora) read back by their readers, plus the readers' errors."""

import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from sed.data.corpora import esc50, icbhi, starss
from sed.data.corpora.dcase_csv import events_by_frame, read_dcase_csv
from sed.data.synth.corpora import SYNTH_CORPORA, make_esc50, make_icbhi, make_starss
from sed.errors import DatasetError

ESC_ARGS = dict(num_classes=10, clips_per_class=5, duration=1.0, sample_rate=16000)
ICBHI_ARGS = dict(num_patients=3, recordings_per_patient=2, duration=8.0)
STARSS_ARGS = dict(files_per_split=1, duration=6.0, num_classes=13, fmt="both")


@pytest.fixture(scope="module")
def esc(tmp_path_factory):
    root = tmp_path_factory.mktemp("esc50")
    return make_esc50(root, seed=0, **ESC_ARGS)


@pytest.fixture(scope="module")
def icb(tmp_path_factory):
    root = tmp_path_factory.mktemp("icbhi")
    return make_icbhi(root, seed=0, **ICBHI_ARGS)


@pytest.fixture(scope="module")
def sta(tmp_path_factory):
    root = tmp_path_factory.mktemp("starss")
    return make_starss(root, seed=0, **STARSS_ARGS)


def _unit(az, el):
    az, el = np.radians(az), np.radians(el)
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


# ---------------------------------------------------------------- ESC-50


def test_esc50_layout_and_labels(esc):
    root = Path(esc["root"])
    clips = esc50.read_esc50_meta(root)
    assert len(clips) == esc["num_files"] == 10 * 5
    assert esc50.label_names(clips) == esc["classes"]
    assert esc["classes"][:3] == ["tone", "chirp", "noise_burst"]
    assert Counter(c.target for c in clips) == {t: 5 for t in range(10)}
    assert Counter((c.target, c.fold) for c in clips) == {(t, f): 1 for t in range(10) for f in range(1, 6)}
    assert sorted(p.name for p in (root / "audio").iterdir()) == sorted(c.path.name for c in clips)
    with open(root / "meta" / "esc50.csv") as f:
        assert f.readline().strip() == "filename,fold,target,category,esc10,src_file,take"
    for c in clips:
        m = re.fullmatch(r"(\d)-(\d+)-([A-C])-(\d+)\.wav", c.path.name)
        assert m and (int(m[1]), int(m[2]), m[3], int(m[4])) == (c.fold, c.clip_id, c.take, c.target)
    i = sf.info(clips[0].path)
    assert (i.samplerate, i.channels, i.frames, i.subtype) == (16000, 1, 16000, "PCM_16")
    x, _ = sf.read(clips[0].path)
    assert 0.85 < np.abs(x).max() < 0.95  # peak-normalised, no clipping


def test_esc50_classes_are_separable_on_held_out_folds(esc):
    """A ridge classifier on clip-level log-mel statistics, trained on 4 folds, tested on the 5th."""
    clips = esc50.read_esc50_meta(esc["root"])
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=256, n_mels=32)

    def stats(path):
        m = (mel(torch.from_numpy(sf.read(path, dtype="float32")[0])) + 1e-8).log()
        return torch.cat([m.mean(1), m.std(1), m.diff(dim=1).abs().mean(1)])

    feats = torch.stack([stats(c.path) for c in clips]).double()
    y = torch.tensor([c.target for c in clips])
    fold = torch.tensor([c.fold for c in clips])
    correct = 0
    for k in range(1, 6):
        tr = fold != k
        z = (feats - feats[tr].mean(0)) / (feats[tr].std(0) + 1e-6)
        z = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)
        gram = z[tr].T @ z[tr] + 10.0 * torch.eye(z.shape[1], dtype=z.dtype)
        w = torch.linalg.solve(gram, z[tr].T @ torch.nn.functional.one_hot(y[tr], 10).double())
        correct += int(((z[~tr] @ w).argmax(1) == y[~tr]).sum())
    assert correct / len(clips) >= 0.9


# ---------------------------------------------------------------- ICBHI


def test_icbhi_layout_and_annotations(icb):
    root = Path(icb["root"])
    stems = icbhi.list_recordings(root)
    recs = {r["name"]: r for r in icb["recordings"]}
    assert stems == sorted(recs) and len(stems) == 3 * 2
    rates, labels = set(), Counter()
    for stem in stems:
        name = icbhi.parse_recording_name(stem)
        assert 101 <= name.patient <= 103 and name.device in icbhi.DEVICES
        cycles = icbhi.read_annotations(root / f"{stem}.txt")
        assert [list(c) for c in cycles] == recs[stem]["cycles"]
        assert all(1500 <= round(1000 * (c.end - c.start)) <= 4000 and c.end <= 8.0 for c in cycles)
        assert all(a.end == b.start for a, b in zip(cycles, cycles[1:]))  # contiguous
        i = sf.info(root / f"{stem}.wav")
        assert i.samplerate == (4000 if name.device == "Litt3200" else 44100) == recs[stem]["sample_rate"]
        assert (i.channels, i.subtype, i.frames) == (1, "PCM_16", 8 * i.samplerate)
        rates.add(i.samplerate)
        labels.update(c.label for c in cycles)
    assert rates == {4000, 44100}
    assert set(labels) == {0, 1, 2, 3} and [labels[k] for k in range(4)] == icb["label_counts"]
    line = (root / f"{stems[0]}.txt").read_text().splitlines()[0]
    assert re.fullmatch(r"\d+\.\d{3}\t\d+\.\d{3}\t[01]\t[01]", line)


def test_icbhi_split_is_by_patient(icb):
    root = Path(icb["root"])
    split = icbhi.read_official_split(root / "official_split.txt")
    assert sorted(split) == icbhi.list_recordings(root)
    by_patient = defaultdict(set)
    for stem, part in split.items():
        by_patient[icbhi.parse_recording_name(stem).patient].add(part)
    assert all(len(parts) == 1 for parts in by_patient.values())
    assert Counter(p for parts in by_patient.values() for p in parts) == {"train": 2, "test": 1}
    folds = icbhi.read_patient_folds(root / "patient_list_foldwise.txt")
    assert sorted(folds) == [101, 102, 103] and set(folds.values()) <= set(range(5))


def _cycle_stats(x, sr):
    """(tonality in 100-1000 Hz, largest crest factor of a 20 ms block over its neighbours' level)."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    f = np.fft.rfftfreq(len(x), 1 / sr)
    band = spec[(f > 100) & (f < 1000)]
    w = int(0.02 * sr)
    blocks = x[: len(x) // w * w].reshape(-1, w)
    sigma = np.median(np.abs(blocks), 1) / 0.6745
    sigma = np.maximum(sigma, np.maximum(np.roll(sigma, 1), np.roll(sigma, -1)))
    return band.max() / np.median(band), (np.abs(blocks).max(1) / sigma).max()


def test_icbhi_crackles_and_wheezes_are_in_their_cycles(icb):
    root = Path(icb["root"])
    tonal, crest = defaultdict(list), defaultdict(list)
    for rec in icb["recordings"]:
        x, sr = sf.read(root / f"{rec['name']}.wav")
        for start, end, c, w in rec["cycles"]:
            t, k = _cycle_stats(x[round(start * sr) : round(end * sr)], sr)
            tonal[w].append(t)
            crest[c].append(k)
    assert min(tonal[1]) > 5.0 > max(tonal[0])
    assert min(crest[1]) > 5.5 > max(crest[0])


# ---------------------------------------------------------------- STARSS


def test_starss_layout_and_labels(sta):
    root = Path(sta["root"])
    pairs = starss.list_starss_pairs(root, "foa")
    assert [p.name for p, _ in starss.list_starss_pairs(root, "mic")] == [p.name for p, _ in pairs]
    assert len(pairs) == sta["num_files"] == 2
    folds = set()
    moving = overlap = 0
    for wav, csv in pairs:
        fold, room, mix = starss.parse_fold_room(wav)
        folds.add(fold)
        assert room in (starss.TRAIN_ROOMS if fold == 3 else starss.TEST_ROOMS) and mix >= 1
        assert wav.parent.name == ("dev-train-synth" if fold == 3 else "dev-test-synth")
        i = sf.info(wav)
        assert (i.channels, i.samplerate, i.frames, i.subtype) == (4, 24000, 6 * 24000, "PCM_16")
        events = read_dcase_csv(csv)
        assert [[e.frame, e.cls, e.track, e.azimuth, e.elevation, e.distance] for e in events] == sta[
            "labels"
        ][f"{wav.parent.name}/{wav.stem}"]
        assert [e.frame for e in events] == sorted(e.frame for e in events)
        assert all(0 <= e.frame < 60 and 0 <= e.cls < 13 for e in events)
        assert all(-180 <= e.azimuth <= 180 and -45 <= e.elevation <= 45 for e in events)
        assert all(float(v).is_integer() for e in events for v in (e.azimuth, e.elevation, e.distance))
        assert max(len(v) for v in events_by_frame(events).values()) <= 3
        overlap += sum(len(v) > 1 for v in events_by_frame(events).values())
        tracks = defaultdict(set)
        for e in events:
            tracks[(e.cls, e.track)].add(e.azimuth)
        moving += sum(len(a) > 1 for a in tracks.values())
    assert folds == {3, 4} and overlap > 0 and moving > 0


def test_starss_intensity_vector_points_at_the_label(sta):
    root = Path(sta["root"])
    checked = 0
    for wav, csv in starss.list_starss_pairs(root, "foa"):
        x, _ = sf.read(wav)
        w, y, z, xx = x.T  # ACN: W, Y, Z, X
        for frame, evs in events_by_frame(read_dcase_csv(csv)).items():
            if len(evs) != 1:
                continue
            s = slice(frame * 2400, (frame + 1) * 2400)
            vec = np.array([np.mean(w[s] * xx[s]), np.mean(w[s] * y[s]), np.mean(w[s] * z[s])])
            cos = vec @ _unit(evs[0].azimuth, evs[0].elevation) / np.linalg.norm(vec)
            assert math.degrees(math.acos(min(1.0, cos))) < 10, (wav.name, frame, evs[0])
            checked += 1
    assert checked >= 10


def test_starss_mic_renders_the_same_scene(sta):
    root = Path(sta["root"])
    for (foa, _), (mic, _) in zip(
        starss.list_starss_pairs(root, "foa"), starss.list_starss_pairs(root, "mic")
    ):
        a, _ = sf.read(foa)
        b, _ = sf.read(mic)
        assert b.shape == a.shape and not np.allclose(a, b)
        # same events at the same times: per-frame energy of W and of the capsules rise and fall together
        energy = [np.square(c[: len(c) // 2400 * 2400]).reshape(-1, 2400, 4).mean((1, 2)) for c in (a, b)]
        assert np.corrcoef(np.log(energy[0]), np.log(energy[1]))[0, 1] > 0.95


# ---------------------------------------------------------------- determinism, arguments


TINY = {
    "esc50": dict(num_classes=2, clips_per_class=5, duration=0.5, sample_rate=8000),
    "icbhi": dict(num_patients=2, recordings_per_patient=2, duration=5.0),
    "starss": dict(files_per_split=1, duration=3.0, num_classes=3, fmt="both"),
}


def _contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("corpus", sorted(SYNTH_CORPORA))
def test_same_seed_same_bytes_other_seed_differs(tmp_path, corpus):
    make = SYNTH_CORPORA[corpus]
    make(tmp_path / "a", seed=7, **TINY[corpus])
    make(tmp_path / "b", seed=7, **TINY[corpus])
    make(tmp_path / "c", seed=8, **TINY[corpus])
    a, b, c = (_contents(tmp_path / d) for d in "abc")
    assert a and a == b
    assert a != c


@pytest.mark.parametrize(
    "corpus,kwargs",
    [
        ("esc50", dict(clips_per_class=7)),
        ("esc50", dict(num_classes=0)),
        ("esc50", dict(num_classes=99)),
        ("esc50", dict(sample_rate=100)),
        ("esc50", dict(seed=-1)),
        ("icbhi", dict(num_patients=1)),
        ("icbhi", dict(duration=1.0)),
        ("icbhi", dict(recordings_per_patient=0)),
        ("starss", dict(fmt="binaural")),
        ("starss", dict(files_per_split=0)),
        ("starss", dict(duration=float("nan"))),
    ],
)
def test_bad_arguments_raise(tmp_path, corpus, kwargs):
    with pytest.raises(ValueError):
        SYNTH_CORPORA[corpus](tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- reader errors


def test_esc50_reader_errors(tmp_path, esc):
    with pytest.raises(DatasetError, match="esc50.csv"):
        esc50.read_esc50_meta(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("filename,fold,target\n1-1-A-0.wav,1,0\n")
    with pytest.raises(DatasetError, match="missing column.*category"):
        esc50.read_esc50_meta(tmp_path)
    (tmp_path / "meta" / "esc50.csv").write_text(
        ",".join(esc50.META_COLUMNS) + "\n1-1-A-0.wav,x,0,a,False,1,A\n"
    )
    with pytest.raises(DatasetError, match="line 2"):
        esc50.read_esc50_meta(tmp_path)
    (tmp_path / "meta" / "esc50.csv").write_text(
        ",".join(esc50.META_COLUMNS) + "\n1-1-A-0.wav,1,0,a,False,1,A\n"
    )
    with pytest.raises(DatasetError, match="1-1-A-0.wav"):
        esc50.read_esc50_meta(tmp_path)  # listed but absent
    clips = esc50.read_esc50_meta(esc["root"])
    with pytest.raises(DatasetError, match="target"):
        esc50.label_names(clips + [clips[0]._replace(category="other")])


def test_icbhi_reader_errors(tmp_path):
    assert icbhi.parse_recording_name("101_1b1_Al_sc_Meditron") == (101, "1b1", "Al", "sc", "Meditron")
    for bad in (
        "101_1b1_Al_sc",
        "abc_1b1_Al_sc_Meditron",
        "101_1b1_Xx_sc_Meditron",
        "101_1b1_Al_zz_Meditron",
        "101_1b1_Al_sc_iPhone",
    ):
        with pytest.raises(DatasetError):
            icbhi.parse_recording_name(bad)
    txt = tmp_path / "101_1b1_Al_sc_Meditron.txt"
    txt.write_text("0.000\t1.500\t0\t0\n1.500\t3.000\t2\t0\n")
    with pytest.raises(DatasetError, match=r"101_1b1_Al_sc_Meditron.txt.*line 2"):
        icbhi.read_annotations(txt)
    txt.write_text("0.000\t1.500\t1\t1\n\n2.0\t1.0\t0\t0\n")
    with pytest.raises(DatasetError, match="line 3"):
        icbhi.read_annotations(txt)
    txt.write_text("0.0\t1.5\t1\t1\n")
    assert icbhi.read_annotations(txt)[0].label == 3
    (tmp_path / "101_1b1_Al_sc_Meditron.wav").write_bytes(b"")
    (tmp_path / "102_1b1_Al_sc_Meditron.wav").write_bytes(b"")
    with pytest.raises(DatasetError, match="102_1b1_Al_sc_Meditron"):
        icbhi.list_recordings(tmp_path)
    split = tmp_path / "official_split.txt"
    split.write_text("101_1b1_Al_sc_Meditron\tval\n")
    with pytest.raises(DatasetError, match="line 1"):
        icbhi.read_official_split(split)


def test_starss_reader_errors(tmp_path, sta):
    assert starss.parse_fold_room("foa_dev/dev-test-sony/fold4_room23_mix012.wav") == (4, 23, 12)
    with pytest.raises(DatasetError):
        starss.parse_fold_room("mix001.wav")
    with pytest.raises(DatasetError, match="foa_dev"):
        starss.list_starss_pairs(tmp_path)
    with pytest.raises(ValueError):
        starss.list_starss_pairs(sta["root"], fmt="stereo")
    wav, csv = starss.list_starss_pairs(sta["root"])[0]
    for sub in ("foa_dev", "metadata_dev"):
        (tmp_path / sub / "dev-train-x").mkdir(parents=True)
    (tmp_path / "foa_dev" / "dev-train-x" / "fold3_room4_mix001.wav").write_bytes(wav.read_bytes())
    (tmp_path / "foa_dev" / "dev-train-x" / "fold3_room4_mix002.wav").write_bytes(wav.read_bytes())
    (tmp_path / "metadata_dev" / "dev-train-x" / "fold3_room4_mix001.csv").write_bytes(csv.read_bytes())
    (tmp_path / "metadata_dev" / "dev-train-x" / "fold3_room4_mix003.csv").write_bytes(csv.read_bytes())
    with pytest.raises(DatasetError, match=r"2 unmatched.*mix002.wav.*mix003.csv"):
        starss.list_starss_pairs(tmp_path)
