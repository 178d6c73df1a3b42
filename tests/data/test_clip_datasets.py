"""Clip datasets: folder/manifest/ESC-50 readers, crops and padding, collate, cache, validation, splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.audio.io import load_audio
from sed.data import clips as clips_mod
from sed.data.clips import ClipDataset, ClipItem, collate_clips, split_items, validate_files
from sed.data.corpora.esc50 import Esc50Dataset, esc50_items
from sed.data.corpora.folder import FolderDataset, ManifestDataset, folder_items, manifest_items
from sed.data.synth.corpora import make_esc50
from sed.errors import DatasetError

SR = 16000


def _wav(path: Path, data, sr: int = SR, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(data, dtype=np.float32), sr, subtype=subtype)
    return path


def _ramp(n: int = SR) -> np.ndarray:
    """x[t] = t / n: a sample's value tells its position."""
    return np.arange(n, dtype=np.float32) / n


@pytest.fixture(scope="module")
def esc(tmp_path_factory):
    return make_esc50(
        tmp_path_factory.mktemp("esc50"),
        seed=0,
        num_classes=3,
        clips_per_class=5,
        duration=1.0,
        sample_rate=SR,
    )


# ---------------------------------------------------------------- folder


def test_folder_items_recursive_sorted_labels(tmp_path):
    _wav(tmp_path / "dog" / "a.wav", _ramp())
    _wav(tmp_path / "dog" / "sub" / "b.flac", _ramp(), subtype="PCM_16")
    _wav(tmp_path / "cat" / "c.wav", _ramp())
    (tmp_path / "cat" / "notes.txt").write_text("not audio")
    _wav(tmp_path / ".trash" / "x.wav", _ramp())
    items, labels = folder_items(tmp_path)
    assert labels == ["cat", "dog"]
    got = {Path(it.path).relative_to(tmp_path).as_posix(): it.label for it in items}
    assert got == {"cat/c.wav": 0, "dog/a.wav": 1, "dog/sub/b.flac": 1}
    assert all(it.start is None and it.fold is None for it in items)
    ds = FolderDataset(tmp_path, labels=["dog", "cat", "bird"], clip_seconds=None)
    assert ds.label_names == ["dog", "cat", "bird"] and not ds.multi_label
    assert sorted(it.label for it in ds.items) == [0, 0, 1]


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        folder_items(tmp_path / "nope")
    _wav(tmp_path / "dog" / "a.wav", _ramp())
    (tmp_path / "cat").mkdir()
    with pytest.raises(DatasetError, match=r"cat: class folder holds no audio"):
        folder_items(tmp_path)
    with pytest.raises(DatasetError, match="'cat' is not one of the labels"):
        folder_items(tmp_path, labels=["dog"])
    _wav(tmp_path / "loose.wav", _ramp())
    with pytest.raises(DatasetError, match="loose.wav"):
        folder_items(tmp_path, labels=["dog", "cat"])


# ---------------------------------------------------------------- manifests


def test_manifest_csv_single_label_relative_paths_segments(tmp_path):
    _wav(tmp_path / "audio" / "a.wav", _ramp())
    absolute = _wav(tmp_path / "elsewhere" / "b.wav", _ramp())
    (tmp_path / "m.csv").write_text(
        f"path,label,start,end,fold,comment\naudio/a.wav,wheeze,0.25,0.75,1,x\n{absolute},crackle,,,2,\n"
    )
    items, labels, multi = manifest_items(tmp_path / "m.csv")
    assert labels == ["crackle", "wheeze"] and multi is False
    assert items == [
        ClipItem(str(tmp_path / "audio" / "a.wav"), 1, 0.25, 0.75, 1),
        ClipItem(str(absolute), 0, None, None, 2),
    ]
    ds = ManifestDataset(tmp_path / "m.csv", clip_seconds=None)
    assert ds[0]["wave"].shape == (SR // 2,) and ds[0]["wave"][0].item() == pytest.approx(0.25, abs=1e-6)


def test_manifest_csv_multi_label_and_base(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\nx.wav,b;a\ny.wav,c\n")
    items, labels, multi = manifest_items(tmp_path / "m.csv", base="/data")
    assert multi and labels == ["a", "b", "c"]
    assert [it.label for it in items] == [[1, 0], [2]] and items[0].path == str(Path("/data/x.wav"))


def test_manifest_jsonl_single_and_multi(tmp_path):
    _wav(tmp_path / "a.wav", _ramp())
    rows = [{"path": "a.wav", "label": "dog", "start": 0.5}, {"path": "a.wav", "label": "cat", "end": 0.5}]
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items, labels, multi = manifest_items(tmp_path / "s.jsonl", labels=["dog", "cat"])
    assert not multi and labels == ["dog", "cat"]
    assert [(it.label, it.start, it.end) for it in items] == [(0, 0.5, None), (1, None, 0.5)]
    rows = [
        {"path": "a.wav", "label": ["dog", "cat"]},
        {"path": "a.wav", "label": ["cat"]},
        {"path": "a.wav", "label": []},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = ManifestDataset(tmp_path / "m.jsonl", clip_seconds=None)
    assert ds.multi_label and ds.label_names == ["cat", "dog"]
    assert [it.label for it in ds.items] == [[1, 0], [0], []]
    assert ds[0]["label"].tolist() == [1.0, 1.0] and ds[2]["label"].tolist() == [0.0, 0.0]
    assert ds[0]["label"].dtype == torch.float32


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("m.csv", "file,label\na.wav,x\n", "line 1: header lacks column.*path"),
        ("m.csv", "path,label,start\na.wav,x,0\nb.wav,x,soon\n", "line 3: start 'soon' is not a number"),
        ("m.csv", "path,label,start,end\na.wav,x,2,1\n", "line 2: end .* must be after start"),
        ("m.csv", "path,label\na.wav,\n", "line 2: empty label"),
        ("m.csv", "path,label,fold\na.wav,x,1\nb.wav,x,\n", "line 3: no fold"),
        ("m.csv", "path,label\na.wav,x\nb.wav,y\n", "line 3: label 'y' is not one of the labels"),
        (
            "m.jsonl",
            '{"path": "a.wav", "label": "x"}\n{"path": "b.wav", "label": "x"\n',
            "line 2: not valid JSON",
        ),
        ("m.jsonl", '{"path": "a.wav"}\n', "line 1: expected an object"),
        ("m.jsonl", '{"label": "x"}\n', "line 1: missing path"),
        (
            "m.jsonl",
            '{"path": "a.wav", "label": "x", "fold": "one"}\n',
            "line 1: fold 'one' is not an integer",
        ),
        ("m.txt", "path,label\n", "unknown manifest format"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=match) as err:
        manifest_items(tmp_path / name, labels=["x"] if "'y'" in match else None)
    assert str(err.value).startswith(str(tmp_path / name)) and "\n" not in str(err.value)


# ---------------------------------------------------------------- ESC-50


def test_esc50_items_official_folds(esc):
    items, labels = esc50_items(esc["root"])
    assert labels == esc["classes"] and len(items) == 15
    assert Counter((it.fold, it.label) for it in items) == {(f, k): 1 for f in range(1, 6) for k in range(3)}
    assert all(Path(it.path).name.startswith(f"{it.fold}-") for it in items)
    ds = Esc50Dataset(esc["root"], folds=[2, 4], clip_seconds=1.0)
    assert len(ds) == 6 and {it.fold for it in ds.items} == {2, 4}
    assert ds[0]["wave"].shape == (SR,) and ds[0]["length"] == SR


# ---------------------------------------------------------------- crops, padding


def test_train_crop_random_inside_clip(tmp_path):
    path = str(_wav(tmp_path / "r.wav", _ramp()))
    ds = ClipDataset(
        [ClipItem(path, 0), ClipItem(path, 0, start=0.25, end=0.75)], ["a"], clip_seconds=0.125, train=True
    )
    n = SR // 8
    for i, (lo, hi) in enumerate([(0, SR - n), (SR // 4, 3 * SR // 4 - n)]):
        offsets = set()
        for _ in range(20):
            item = ds[i]
            w = item["wave"]
            assert w.shape == (n,) and item["length"] == n
            first = round(w[0].item() * SR)
            assert lo <= first <= hi and w[-1].item() == pytest.approx((first + n - 1) / SR, abs=1e-6)
            offsets.add(first)
        assert len(offsets) > 5


def test_eval_centre_crop_deterministic_and_padding(tmp_path):
    path = str(_wav(tmp_path / "r.wav", _ramp()))
    ds = ClipDataset([ClipItem(path, 0), ClipItem(path, 0, start=0.5)], ["a"], clip_seconds=0.5, train=False)
    a, b = ds[0]["wave"], ds[0]["wave"]
    assert torch.equal(a, b) and a[0].item() == pytest.approx(0.25, abs=1e-6)
    assert ds[1]["wave"][0].item() == pytest.approx(0.5, abs=1e-6)  # exactly clip-long: no crop
    long = ClipDataset([ClipItem(path, 0, start=0.75)], ["a"], clip_seconds=0.5, train=True)
    item = long[0]
    assert item["wave"].shape == (SR // 2,) and item["length"] == SR // 4
    assert item["wave"][0].item() == pytest.approx(0.75, abs=1e-6)
    assert torch.all(item["wave"][SR // 4 :] == 0) and torch.all(item["wave"][: SR // 4] > 0)
    whole = ClipDataset([ClipItem(path, 0), ClipItem(path, 0, 0.1, 0.3)], ["a"], clip_seconds=None)
    assert whole[0]["length"] == SR and whole[1]["wave"].shape == (round(0.2 * SR),)


def test_segment_read_matches_resampled_file_and_downmix(tmp_path):
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, size=(44100, 2)).astype(np.float32)
    path = str(_wav(tmp_path / "s.wav", stereo, sr=44100))
    full = load_audio(path, SR, channels="mono")[0][0]
    item = ClipItem(path, 0, start=0.3, end=0.7)
    for cache in (False, True):
        ds = ClipDataset([item], ["a"], sample_rate=SR, clip_seconds=None, cache_audio=cache)
        w = ds[0]["wave"]
        assert w.shape == (round(0.4 * SR),)
        torch.testing.assert_close(w, full[round(0.3 * SR) : round(0.7 * SR)], atol=1e-5, rtol=0)
    native = ClipDataset([ClipItem(path, 0, 0.5)], ["a"], sample_rate=44100, clip_seconds=None)[0]["wave"]
    torch.testing.assert_close(native, torch.from_numpy(stereo[22050:].mean(axis=1)))


def test_collate_shapes_single_and_multi(tmp_path):
    p1, p2 = str(_wav(tmp_path / "a.wav", _ramp(SR))), str(_wav(tmp_path / "b.wav", _ramp(SR // 2)))
    ds = ClipDataset([ClipItem(p1, 1), ClipItem(p2, 0)], ["x", "y"], clip_seconds=None)
    batch = collate_clips([ds[0], ds[1]])
    assert batch["wave"].shape == (2, SR) and batch["wave"].dtype == torch.float32
    assert batch["lengths"].tolist() == [SR, SR // 2] and batch["lengths"].dtype == torch.long
    assert batch["label"].tolist() == [1, 0] and batch["label"].dtype == torch.long
    assert batch["path"] == [p1, p2] and torch.all(batch["wave"][1, SR // 2 :] == 0)
    multi = ClipDataset([ClipItem(p1, [0, 2]), ClipItem(p2, 1)], ["x", "y", "z"], clip_seconds=0.25)
    batch = collate_clips([multi[0], multi[1]])
    assert batch["wave"].shape == (2, SR // 4) and batch["label"].dtype == torch.float32
    assert batch["label"].tolist() == [[1, 0, 1], [0, 1, 0]]


def test_bad_labels_rejected(tmp_path):
    with pytest.raises(DatasetError, match="x.wav: label 3 is not a class index in 0..1"):
        ClipDataset([ClipItem("x.wav", 3)], ["a", "b"])
    with pytest.raises(DatasetError, match="has 2 labels in a single-label dataset"):
        ClipDataset([ClipItem("x.wav", [0, 1])], ["a", "b"], multi_label=False)


def test_cache_audio_loads_each_file_once(tmp_path, monkeypatch):
    calls = Counter()

    def counting(path, *args, **kwargs):
        calls[path] += 1
        return load_audio(path, *args, **kwargs)

    monkeypatch.setattr(clips_mod, "load_audio", counting)
    p1, p2 = str(_wav(tmp_path / "a.wav", _ramp())), str(_wav(tmp_path / "b.wav", _ramp()))
    items = [ClipItem(p1, 0, 0.0, 0.5), ClipItem(p1, 1, 0.5, 1.0), ClipItem(p2, 0)]
    ds = ClipDataset(items, ["a", "b"], clip_seconds=0.25, train=True, cache_audio=True)
    first = [ds[i]["wave"] for i in range(3) for _ in range(3)]
    assert calls == {p1: 1, p2: 1} and all(w.shape == (SR // 4,) for w in first)
    plain = ClipDataset([ClipItem(p2, 0)], ["a", "b"], clip_seconds=None)
    plain[0], plain[0]
    assert calls[p2] == 3  # without the cache, every access reads the file


# ---------------------------------------------------------------- validation


def test_validate_files_lists_every_problem(tmp_path):
    good = str(_wav(tmp_path / "good.wav", _ramp()))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "text.wav"
    text.write_text("this is not audio")
    zero = str(_wav(tmp_path / "zero.wav", np.zeros(0)))
    items = [
        ClipItem(good, 0),
        ClipItem(str(tmp_path / "missing.wav"), 0),
        ClipItem(str(empty), 0),
        ClipItem(str(text), 1),
        ClipItem(zero, 1),
        ClipItem(good, 1, start=5.0),
        ClipItem(str(tmp_path / "missing.wav"), 1, start=0.5),
    ]
    validate_files(items[:1])
    with pytest.raises(DatasetError) as err:
        validate_files(items)
    msg = str(err.value)
    assert msg.startswith("5 of 5 audio file(s) cannot be used:")
    lines = msg.splitlines()[1:]
    assert len(lines) == 5
    expected = {
        "missing.wav": "not found",
        "empty.wav": "empty",
        "text.wav": "not a readable audio file",
        "zero.wav": "zero samples",
        "good.wav": "segment starts at 5.0 s",
    }
    for name, reason in expected.items():
        assert any(line.startswith(str(tmp_path / name) + ": ") and reason in line for line in lines), name


# ---------------------------------------------------------------- split


def test_split_items_stratified_deterministic():
    items = [ClipItem(f"{k}_{i}.wav", k) for k in range(3) for i in range(10)]
    items += [ClipItem("rare.wav", 3), ClipItem("seg.wav", 0, 0, 1), ClipItem("seg.wav", 0, 1, 2)]
    train, val = split_items(items, 0.2, seed=1)
    assert split_items(items, 0.2, seed=1) == (train, val)
    assert split_items(items, 0.2, seed=2)[1] != val
    assert sorted(train + val, key=items.index) == items and not set(map(id, train)) & set(map(id, val))
    assert Counter(it.label for it in val) in ({0: 2, 1: 2, 2: 2}, {0: 3, 1: 2, 2: 2})
    assert any(it.path == "rare.wav" for it in train)  # a class with one file stays in train
    assert len({it.path in {v.path for v in val} for it in items if it.path == "seg.wav"}) == 1
    multi = [ClipItem(f"m{i}.wav", [0, 1] if i % 2 else [0]) for i in range(10)]
    _, mval = split_items(multi, 0.2, seed=0)
    assert sum(1 in it.label for it in mval) == 1 and len(mval) == 2
    with pytest.raises(ValueError):
        split_items(items, 0.0)
