"""WebDataset shards: sedkit shard writes them (atomically, resumably), webdataset and tar read them
alone, ShardClips streams them with its per-rank and per-worker guarantees."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from sed.audio.io import load_audio
from sed.cli.main import main
from sed.data.clips import collate_clips
from sed.data.modules.audio import AudioDataModule
from sed.data.shards.reader import ShardClips, shard_urls
from sed.data.shards.writer import parse_bytes, read_source, write_shards
from sed.data.synth.corpora import make_esc50, make_icbhi
from sed.errors import DatasetError


@pytest.fixture(scope="module")
def esc(tmp_path_factory):
    root = tmp_path_factory.mktemp("esc")
    make_esc50(root, seed=0, num_classes=3, clips_per_class=10, duration=1.0, sample_rate=16000)
    return root


@pytest.fixture(scope="module")
def sharded(esc, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "esc"
    index = write_shards(read_source(esc), out, shard_size=6)
    return out, index


def _decoded(path):
    import webdataset as wds

    out = {}
    for sample in wds.WebDataset(str(path), shardshuffle=False):  # webdataset alone, no sed reader
        data, sr = sf.read(io.BytesIO(sample["flac"]), dtype="float32", always_2d=True)
        out[sample["__key__"]] = (data.T, sr, json.loads(sample["json"]))
    return out


def test_shards_hold_exactly_the_source_samples(esc, sharded):
    out, index = sharded
    src = read_source(esc)
    assert index["count"] == len(src.items) == 30 and len(index["shards"]) == 5 and not index["skipped"]
    assert index["labels"] == src.labels and index["label_counts"] == {n: 10 for n in src.labels}
    seen = {}
    for url in shard_urls(out):
        names = subprocess.run(["tar", "-tf", url], capture_output=True, text=True, check=True).stdout.split()
        assert len(names) == 12 and all(n.endswith((".flac", ".json")) for n in names)
        seen.update(_decoded(url))
    assert sorted(seen) == [f"{i:08d}" for i in range(30)]
    for i, it in enumerate(src.items):
        audio, sr, meta = seen[f"{i:08d}"]
        ref, ref_sr = load_audio(it.path)
        assert sr == ref_sr and np.array_equal(audio, ref.numpy())  # PCM_16 source: FLAC is lossless
        assert (
            meta["labels"] == [src.labels[it.label]] and meta["fold"] == it.fold and meta["source"] == it.path
        )
        assert meta["duration"] == pytest.approx(1.0)


def test_rate_segments_and_icbhi_cycles(tmp_path):
    root = tmp_path / "icbhi"
    make_icbhi(root, seed=0, num_patients=3)
    src = read_source(root)
    assert src.labels == ["normal", "crackle", "wheeze", "both"] and all(
        it.start is not None for it in src.items
    )
    index = write_shards(src, tmp_path / "out", shard_size=1000, rate=8000)
    assert index["count"] + len(index["skipped"]) == len(src.items)
    samples = _decoded(shard_urls(tmp_path / "out")[0])
    audio, sr, meta = samples["00000000"]
    it = src.items[0]
    ref = load_audio(it.path, sample_rate=8000)[0]
    a, b = round(it.start * 8000), round(it.end * 8000)
    assert sr == 8000 and meta["sample_rate"] == 8000 and {"patient", "cycle", "split"} <= set(meta)
    assert np.abs(audio - ref[:, a:b].numpy()).max() < 2**-22  # resampled: PCM_24 in the FLAC
    assert (meta["start"], meta["end"]) == (it.start, it.end)


def test_rerun_skips_complete_shards_and_a_killed_run_resumes(esc, tmp_path):
    out = tmp_path / "s"
    write_shards(read_source(esc), out, shard_size=7)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("shard-*.tar")}
    write_shards(read_source(esc), out, shard_size=7)  # nothing to do
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("shard-*.tar")} == before
    (out / "shard-000002.tar").unlink()  # as if killed before that shard was renamed into place
    (out / "index.json").unlink()
    (out / ".shard-000003.tar.abcd1234.tar").write_bytes(b"partial")  # a killed write's temporary
    index = write_shards(read_source(esc), out, shard_size=7)
    after = {p.name: p.read_bytes() for p in out.glob("shard-*.tar")}
    assert after == {k: v[0] for k, v in before.items()}  # the same bytes: deterministic
    assert (
        index["count"] == 30
        and (out / "shard-000001.tar").stat().st_mtime_ns == before["shard-000001.tar"][1]
    )
    assert not (out / ".shard-000003.tar.abcd1234.tar").exists()  # killed writes' temporaries are swept


@pytest.mark.parametrize("change", [["--shard-size", "4"], ["--format", "wav"], ["--rate", "8000"]])
def test_a_folder_of_another_job_is_refused_or_overwritten(esc, tmp_path, capsys, change):
    """Other --shard-size/--format/--rate (or another source) into a folder of shards: one line and
    exit 2 before any work, the old shards and index untouched; --overwrite replaces them completely."""
    out = tmp_path / "s"
    assert main(["shard", str(esc), "--out", str(out), "--shard-size", "7"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    args = ["shard", str(esc), "--out", str(out), "--shard-size", "7", *change]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out}: holds shards of another job: another ")
    assert err[0].endswith("use an empty folder, or --overwrite to replace them")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([*args, "--overwrite"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert not index["skipped"] and index["count"] == 30
    assert sorted(p.name for p in out.glob("shard-*.tar")) == sorted(s["name"] for s in index["shards"])
    assert index["audio"] == ("wav" if "--format" in change else "flac")
    assert len(index["shards"]) == (8 if "--shard-size" in change else 5)
    assert index["sample_rate"] == (8000 if "--rate" in change else None)
    assert len(list(ShardClips(out, clip_seconds=None))) == 30  # the new shards read whole


def test_an_unknown_folder_or_a_bad_index_is_refused(esc, tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "index.json").write_text(json.dumps({"labels": ["a"], "shards": ["x"]}))
    assert main(["shard", str(esc), "--out", str(out)]) == 2
    assert "index.json names no job; use an empty folder" in capsys.readouterr().err


def test_bad_files_are_reported_and_skipped(esc, tmp_path, capsys):
    root = tmp_path / "folder"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for k in range(3):
            sf.write(root / label / f"{k}.wav", 0.1 * np.random.default_rng(k).standard_normal(1600), 16000)
    (root / "b" / "9.wav").write_bytes(b"junk")
    rc = main(["shard", str(root), "--out", str(tmp_path / "o"), "--shard-bytes", "10KB"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("error: ") == 1 and "9.wav: not a readable audio file" in err
    index = json.loads((tmp_path / "o" / "index.json").read_text())
    assert index["count"] == 6 and len(index["skipped"]) == 1 and len(index["shards"]) == 2  # 3.2 KB each
    assert (
        index["command"][:2] == ["sedkit", "shard"]
        and parse_bytes("1GB") == 10**9
        and parse_bytes("2KiB") == 2048
    )


def _corrupt_member(shard, key, out):
    with tarfile.open(shard) as src, tarfile.open(out, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == f"{key}.flac":
                data = data[:40] + b"\xff" * 200 + data[240:]
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))


def test_a_corrupt_member_is_reported_and_the_stream_goes_on(sharded, tmp_path, capfd):
    out, index = sharded
    bad = tmp_path / "bad"
    bad.mkdir()
    for url in shard_urls(out):
        name = os.path.basename(url)
        if name == "shard-000001.tar":
            _corrupt_member(url, "00000008", bad / name)
        else:
            (bad / name).write_bytes(open(url, "rb").read())
    (bad / "index.json").write_text(json.dumps(index))
    items = list(ShardClips(bad, clip_seconds=None))
    err = capfd.readouterr().err
    good = [i for i in items if "error" not in i]
    failed = [i for i in items if "error" in i]  # evaluation: the failure comes flagged, to be counted
    assert len(good) == 29 and "00000008" not in {i["path"][-8:] for i in good}
    assert [(i["path"][-25:], i["pad"]) for i in failed] == [("shard-000001.tar/00000008", True)]
    assert err.count("error: ") == 1 and "shard-000001.tar/00000008: not a readable audio file" in err
    train = ShardClips(bad, clip_seconds=0.5, train=True)
    assert len(list(train)) == 30  # training keeps its epoch length: the next sample takes the place


def test_ranks_and_workers_read_each_sample_once(sharded, monkeypatch):
    """6 shards of 5 samples... here 5 shards of 6: with 1 rank x 1 worker every sample once; with
    uneven deals every worker still yields L = total // (ranks x workers) samples."""
    out, _ = sharded

    def keys(rank, size, workers, epoch=0, train=True):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(size))
        ds = ShardClips(out, clip_seconds=0.25, train=train, num_workers=workers, seed=3)
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate_clips)
        batches = list(loader)
        got = [p for batch in batches for p in batch["path"]]
        length = len(ds) if train else ds.expected()  # evaluation is read to its end: no len
        assert len(got) == length == (ds.per_worker(size) * max(1, workers) if train or size > 1 else 30)
        pads = [bool(x) for b in batches for x in b.get("pad", torch.zeros(len(b["path"])))]
        return [p for p, pad in zip(got, pads) if not pad]  # evaluation: the samples scored

    assert sorted(keys(0, 1, 0)) == sorted(set(keys(0, 1, 0))) and len(keys(0, 1, 0)) == 30
    assert keys(0, 1, 0, epoch=0) != keys(0, 1, 0, epoch=1)  # a new deal and shuffle each epoch
    for size, workers in ((2, 0), (3, 2), (5, 1)):
        per_rank = [keys(r, size, workers) for r in range(size)]
        assert len({len(k) for k in per_rank}) == 1  # every rank: the same number of samples (lockstep)
        if 30 % (size * max(1, workers)) == 0 and 5 % size == 0:  # 5 shards of 6 dealt evenly
            every = [k for ks in per_rank for k in ks]
            assert sorted(every) == sorted(set(every)) and len(every) == 30
    evaluation = [keys(r, 2, 2, train=False) for r in range(2)]  # 5 shards on 2 x 2: padded, flagged
    assert sorted(evaluation[0] + evaluation[1]) == sorted(keys(0, 1, 0, train=False))  # eval: all, once


def test_datamodule_source_shards(sharded, esc):
    out, _ = sharded
    dm = AudioDataModule(source="shards", shards=str(out), clip_seconds=0.5, batch_size=4, val_folds=[5])
    ref = AudioDataModule(source="esc50", root=str(esc), clip_seconds=0.5, batch_size=4, val_folds=[5])
    assert dm.label_names == ref.label_names and dm.num_classes == 3 and not dm.is_multi_label
    assert torch.equal(dm.class_counts(), ref.class_counts())
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["wave"].shape == (4, 8000) and batch["label"].dtype == torch.long
    val = [p for b in dm.val_dataloader() for p in b["path"]]
    assert len(val) == 6 and len(dm.train_dataloader()) == 6  # 24 train samples / batch 4
    with pytest.raises(ValueError, match="balanced sampling needs random access"):
        AudioDataModule(source="shards", shards=str(out), balanced=True)


def test_two_ddp_processes_on_shards(esc, tmp_path):
    """2 CPU processes (gloo) train on 4 shards: together they see every training sample exactly once
    per epoch; validation metrics cover both ranks' samples; rank 0's checkpoint is every rank's model."""
    import csv
    import sys

    import yaml

    from sed.inference.classifier import Classifier

    src = read_source(esc)
    rows = [["path", "label", "fold"]] + [[it.path, src.labels[it.label], it.fold] for it in src.items]
    for name, keep in (("train", lambda f: f != 5), ("val", lambda f: f == 5)):
        manifest = tmp_path / f"{name}.csv"
        with open(manifest, "w", newline="") as f:
            csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if keep(r[2])])
        write_shards(read_source(manifest, labels=src.labels), tmp_path / name, shard_size=6)
    probe, run = tmp_path / "probe", tmp_path / "run"
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "devices": 2,
            "strategy": "ddp",
            "default_root_dir": str(run),
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            "callbacks": [{"class_path": "tests.training.ddp_probe.Probe", "init_args": {"out": str(probe)}}],
        },
        "model": {
            "class_path": "sed.tasks.ClassificationTask",
            "init_args": {"model_name": "cnn_tiny", "model_kwargs": {"clip_seconds": 1.0}, "lr": 0.003},
        },
        "data": {
            "class_path": "sed.data.modules.audio.AudioDataModule",
            "init_args": {
                "source": "shards",
                "shards": str(tmp_path / "train"),
                "val_shards": str(tmp_path / "val"),
                "clip_seconds": 1.0,
                "batch_size": 4,
                "shuffle_buffer": 8,
            },
        },
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run(
        [sys.executable, "-m", "sed", "fit", "--config", str(tmp_path / "cfg.yaml")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    train_keys = sorted(f"{u}/{k}" for u in shard_urls(tmp_path / "train") for k in _decoded(u))
    for epoch in (0, 1):
        seen = [json.loads((probe / f"seen-rank{rank}-epoch{epoch}.json").read_text()) for rank in (0, 1)]
        assert len(seen[0]) == len(seen[1]) == 12 and sorted(seen[0] + seen[1]) == train_keys
    ckpt = Classifier.from_pretrained(run / "checkpoints" / "last.ckpt", device="cpu").model.state_dict()
    for rank in (0, 1):
        weights = torch.load(probe / f"weights-rank{rank}.pt", weights_only=True)
        assert all(torch.equal(weights[k], ckpt[k]) for k in ckpt)
    logged = [float(x["val_acc"]) for x in csv.DictReader(open(run / "metrics.csv")) if x.get("val_acc")][-1]
    clf = Classifier.from_pretrained(run / "checkpoints" / "last.ckpt", device="cpu")
    val = ShardClips(tmp_path / "val", clip_seconds=1.0)
    items = list(val)
    preds = clf.score([i["wave"] for i in items])
    acc = np.mean([p.scores.argmax() == i["label"] for p, i in zip(preds, items)])
    assert len(items) == 6 and logged == pytest.approx(acc)  # gathered over both ranks' 3 + 3 clips


# ---------------------------------------------------------------------- hostile shards (issue 23)
def _flac(seconds=0.1, sr=16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.1 * np.sin(np.arange(int(seconds * sr)) / 5.0), sr, format="FLAC")
    return buf.getvalue()


def _meta(label="a", fold=1) -> bytes:
    return json.dumps({"labels": [label], "fold": fold}).encode()


def _hostile(folder: Path, members, counts: dict | None = None, labels=("a", "b")) -> Path:
    """``folder/shard-000000.tar`` holding ``members`` (name, bytes, optional TarInfo changes) and an
    index.json counting ``counts`` per fold (default: one per distinct key)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "shard-000000.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, *change in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for k, v in (change[0] if change else {}).items():
                setattr(info, k, v)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    keys = {m[0].split("/")[-1].split(".")[0] for m in members}
    entry = {"name": "shard-000000.tar", "count": len(keys), "folds": counts or {"1": len(keys)}}
    (folder / "index.json").write_text(json.dumps({"labels": list(labels), "shards": [entry]}))
    return folder


def _read(folder, capfd):
    items = list(ShardClips(folder, labels=["a", "b"], clip_seconds=None))
    err = capfd.readouterr().err.splitlines()
    return (
        [i["path"].rsplit("/", 1)[-1] for i in items if "error" not in i],
        [i for i in items if "error" in i],
        err,
    )


def test_member_names_types_and_duplicate_keys_are_refused(tmp_path, capfd):
    """Names with folders or '..', links and directories, a key met twice: one clean line each, the
    good samples read, never a KeyError."""
    good = [("00000000.flac", _flac()), ("00000000.json", _meta())]
    folder = _hostile(
        tmp_path / "s",
        good
        + [
            ("sub/00000001.flac", _flac()),
            ("sub/00000001.json", _meta()),
            ("../../00000002.flac", _flac()),
            ("00000003.flac", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
            ("00000004", b"", {"type": tarfile.DIRTYPE}),
            ("00000005.flac", _flac()),
            ("00000005.json", _meta("b")),
            ("00000000.flac", _flac()),
            ("00000000.json", _meta("b")),  # the key again, apart
        ],
    )
    keys, failed, err = _read(folder, capfd)
    assert keys == ["00000000", "00000005"] and len(failed) == len(err) == 6
    assert all(e.startswith("error: ") and e.count("shard-000000.tar") == 1 for e in err)
    assert "'sub/00000001.flac' is not named <key>.<ext>" in err[0] and "'../../00000002.flac'" in err[2]
    assert "'00000003.flac' is a symbolic link, not a regular file" in err[3] and "is a directory" in err[4]
    assert err[5].endswith(
        "shard-000000.tar/00000000: key appears twice in the shard (index.json counts it once)"
    )


def test_failures_are_clean_lines_without_reprs(tmp_path, capfd):
    """Undecodable audio, bad JSON, an unknown label, a truncated and a garbage tar: one line each,
    naming the shard once, without Python reprs."""
    folder = _hostile(
        tmp_path / "s",
        [
            ("00000000.flac", b"not audio at all" * 10),
            ("00000000.json", _meta()),
            ("00000001.flac", _flac()),
            ("00000001.json", b"{not json"),
            ("00000002.flac", _flac()),
            ("00000002.json", _meta("zebra")),
            ("00000003.flac", _flac()),
            ("00000003.json", json.dumps({"labels": ["a"], "fold": [1]}).encode()),
            ("00000004.flac", _flac()),
            ("00000004.json", _meta()),
        ],
    )
    keys, failed, err = _read(folder, capfd)
    assert keys == ["00000004"] and len(failed) == len(err) == 4
    assert err[0].endswith("00000000: not a readable audio file (Format not recognised)")
    assert "00000001: its .json is not JSON" in err[1] and err[2].endswith(
        "00000002: label 'zebra' is not one of the labels"
    )
    assert err[3].endswith("00000003: its .json fold [1] is not an integer")
    tar = folder / "shard-000000.tar"
    whole = tar.read_bytes()
    tar.write_bytes(whole[:1500])  # cut inside the header of 00000000.json
    keys, failed, err = _read(folder, capfd)
    assert keys == [] and len(failed) == len(err) == 2 and "00000000: needs .json" in err[1]
    assert err[0].endswith("shard-000000.tar: truncated tar: it ends inside a member header at byte 1500")
    tar.write_bytes(whole[:600])  # cut inside the data of 00000000.flac (bytes 512-672)
    keys, failed, err = _read(folder, capfd)
    assert (
        keys == [] and len(failed) == len(err) == 1 and "past the end of the archive: truncated tar" in err[0]
    )
    tar.write_bytes(b"\x00garbage" * 300)
    keys, failed, err = _read(folder, capfd)
    assert keys == [] and len(failed) == len(err) == 1 and "damaged tar" in err[0]
    for e in [*err]:
        assert "<_io" not in e and " at 0x" not in e and e.count("shard-000000.tar") == 1


def test_huge_members_are_refused_before_any_read(tmp_path, capfd, monkeypatch):
    """A member declaring 3 GB (header only, or a real sparse file) is refused by its declared size
    before a byte of it is read; the limit is the module's constant."""
    import shutil
    import tracemalloc

    import sed.data.shards.members as shards

    header = tarfile.TarInfo("00000002.flac")
    header.size = 3 << 30
    folder = _hostile(tmp_path / "s", [("00000001.flac", _flac()), ("00000001.json", _meta())])
    tar = folder / "shard-000000.tar"
    with tarfile.open(tar) as t:
        end = max(m.offset_data + -(-m.size // 512) * 512 for m in t.getmembers())
    tar.write_bytes(tar.read_bytes()[:end] + header.tobuf(tarfile.GNU_FORMAT) + b"\0" * 4096)
    tracemalloc.start()
    keys, failed, err = _read(folder, capfd)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert keys == ["00000001"] and len(err) == 1 and peak < 32 << 20
    assert f"'00000002.flac' declares {3 << 30} bytes, over the 256 MiB limit" in err[0]
    if shutil.which("tar"):  # the finding as reported: a real sparse 3 GB member (GNU tar -S)
        sparse = tmp_path / "sp"
        sparse.mkdir()
        with open(sparse / "00000002.flac", "wb") as f:
            f.truncate(3 << 30)
        subprocess.run(["tar", "-cSf", str(tar), "-C", str(sparse), "00000002.flac"], check=True)
        assert tar.stat().st_size < 1 << 20
        tracemalloc.start()
        keys, failed, err = _read(folder, capfd)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (
            keys == []
            and len(err) == 1
            and "is a sparse file, not a regular file" in err[0]
            and peak < 32 << 20
        )
    monkeypatch.setattr(shards, "MAX_MEMBER_BYTES", 10)  # real members over the limit: never read
    _hostile(folder, [("00000001.flac", _flac()), ("00000001.json", _meta())])
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda *a: pytest.fail("read a refused member"))
    keys, failed, err = _read(folder, capfd)
    assert (
        keys == []
        and len(failed) == len(err) == 2
        and all("bytes, over the 10 bytes limit" in e for e in err)
    )


@pytest.mark.parametrize(
    "index, reason",
    [
        ({"labels": ["a"], "shards": ["shard-000000.tar"]}, "shards[0] is not an object"),
        (
            {"labels": ["a"], "shards": [{"name": "shard-000000.tar", "folds": {"x": 1}}]},
            "shards[0].folds has a key that is not a fold number",
        ),
        (
            {"labels": ["a"], "shards": [{"name": "shard-000000.tar", "folds": {"1": "3"}}]},
            "shards[0].folds is not a map of counts",
        ),
        ({"labels": "a", "shards": []}, "labels is not a list of names"),
    ],
)
def test_an_index_of_the_wrong_shape_is_one_line(tmp_path, index, reason):
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(DatasetError) as e:
        ShardClips(tmp_path)
    assert str(e.value).endswith(f"({reason})")
    assert str(e.value).startswith(str(tmp_path / "index.json") + ": not a sed shard index")
