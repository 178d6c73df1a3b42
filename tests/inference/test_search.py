"""Search by text over an index of CLAP audio embeddings (sed.inference.search): scores against transformers'
own ClapModel, the planted file first, best window per file, resumable and interrupted runs, bad inputs."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.errors import DatasetError, UsageError
from sed.fileio import stale_temps
from sed.inference.classifier import Classifier
from sed.inference.search import Index, build_index
from tests.models.clap_dir import make_clap_dir

SR = 16000  # the small CLAP dir: 16 kHz, 1-s clips (so 1-s windows by default)
QUERY = "glass breaking"
EMBED_SEGMENTS = Classifier.embed_segments


def _sound(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * (200 + 500 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    clap = make_clap_dir(root / "clap", small=True)
    audio = root / "audio"
    (audio / "sub").mkdir(parents=True)
    sounds = {f"s{i}.wav": _sound(0.4 + 0.1 * i, i) for i in range(5)}
    sounds["sub/s5.wav"] = _sound(1.0, 5)
    sounds["long.wav"] = np.concatenate([_sound(1.0, 6), _sound(1.0, 7), _sound(1.0, 8)])  # 3 windows
    for name, wave in sounds.items():
        sf.write(audio / name, wave, SR, subtype="FLOAT")
    run = build_index([audio], root / "index", clap, device="cpu")
    return root, clap, audio, sounds, run


def _reference_cosines(clap, sounds, audio):
    """{(file, start): cosine of QUERY and the window}, by transformers' ClapModel (logits / scale)."""
    from transformers import ClapModel, ClapProcessor

    model, proc = ClapModel.from_pretrained(str(clap)).eval(), ClapProcessor.from_pretrained(str(clap))
    keys, waves = [], []
    for name, wave in sounds.items():
        for start in range(0, len(wave), SR):  # 1-s windows, hop 1 s
            keys.append((str(audio / name), start / SR))
            waves.append(wave[start : start + SR])
    x = proc(text=[QUERY], audio=waves, sampling_rate=SR, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**x)
        cos = (out.logits_per_audio[:, 0] / model.logit_scale_a.exp()).numpy()
    return dict(zip(keys, cos.tolist()))


def test_text_scores_equal_transformers_clap_and_each_file_comes_once_at_its_best(setup):
    root, clap, audio, sounds, run = setup
    assert (run.indexed, run.skipped, run.entries, run.errors) == (7, 0, 9, [])
    index = Index.load(root / "index")
    assert len(index) == 9 and index.meta["window"] == index.meta["hop"] == 1.0
    assert index.meta["checkpoint"] == str(clap) and index.meta["dim"] == 16 and index.meta["count"] == 9
    ref = _reference_cosines(clap, sounds, audio)
    windows = index.search(QUERY, top_k=100, all_windows=True)
    assert len(windows) == 9 and {(h.file, h.start) for h in windows} == set(ref)
    for h in windows:
        assert h.score == pytest.approx(ref[(h.file, h.start)], abs=1e-5)
    assert [h.score for h in windows] == sorted((h.score for h in windows), reverse=True)
    long = sorted((h.start, h.end) for h in windows if h.file.endswith("long.wav"))
    assert long == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert [(h.start, h.end) for h in windows if h.file.endswith("s1.wav")] == [(0.0, 0.5)]

    best = index.search(QUERY, top_k=100)  # each file once, at its best window
    per_file = {}
    for (file, start), score in ref.items():
        if file not in per_file or score > per_file[file][1]:
            per_file[file] = (start, score)
    expected = sorted(per_file, key=lambda f: -per_file[f][1])
    assert [h.file for h in best] == expected and [h.rank for h in best] == list(range(1, 8))
    assert all(h.start == per_file[h.file][0] for h in best)
    assert [h.file for h in index.search(QUERY, top_k=2)] == expected[:2]


def test_query_by_example_finds_the_planted_file_and_window_first(setup, tmp_path):
    root, clap, audio, sounds, _ = setup
    index = Index.load(root / "index")
    sf.write(tmp_path / "probe.wav", sounds["long.wav"][SR : 2 * SR], SR, subtype="FLOAT")  # long.wav's 1-2 s
    top = index.search(index.audio_embedding(tmp_path / "probe.wav", device="cpu"), top_k=3, all_windows=True)
    assert (top[0].file, top[0].start, top[0].end) == (str(audio / "long.wav"), 1.0, 2.0)
    assert top[0].score == pytest.approx(1.0, abs=1e-5) and top[1].score < 1.0 - 1e-4
    top = index.search(index.audio_embedding(audio / "s3.wav", device="cpu"), top_k=1)
    assert top[0].file == str(audio / "s3.wav") and top[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="16-d"):
        index.search(np.ones(8, np.float32))


def _entries(path) -> dict:
    index = Index.load(path)
    return {(index.files[i], s): e for i, s, e in zip(index.item, index.start, index.embeddings)}


def _count_embedded(monkeypatch, fail_at=None) -> list:
    """Record the files each run embeds; with ``fail_at``, raise when that file's first window comes."""
    embedded = []

    def spy(self, sources, *args, **kwargs):
        embedded.append([os.path.basename(s) for s in sources])
        for seg, vec in EMBED_SEGMENTS(self, sources, *args, **kwargs):
            if fail_at is not None and seg.item == fail_at:
                raise RuntimeError("killed")
            yield seg, vec

    monkeypatch.setattr(Classifier, "embed_segments", spy)
    return embedded


def test_a_rerun_indexes_only_new_and_changed_files_and_equals_a_fresh_index(setup, tmp_path, monkeypatch):
    root, clap, audio, sounds, _ = setup
    files = sorted(str(p) for p in audio.rglob("*.wav"))[:5]
    copies = tmp_path / "audio"
    copies.mkdir()
    for f in files:
        (copies / os.path.basename(f)).write_bytes(open(f, "rb").read())
    names = sorted(os.listdir(copies))
    embedded = _count_embedded(monkeypatch)
    build_index([copies / n for n in names[:3]], tmp_path / "idx", clap, device="cpu")
    run = build_index([copies], tmp_path / "idx", clap, device="cpu")  # 2 more files
    assert embedded == [names[:3], names[3:]] and (run.indexed, run.skipped) == (2, 3)

    changed = copies / names[0]  # a file changed since: indexed again, its old rows superseded
    sf.write(changed, _sound(2.0, 9), SR, subtype="FLOAT")
    os.utime(changed, ns=(1_000_000_000, 1_000_000_000))
    run = build_index([copies], tmp_path / "idx", clap, device="cpu")
    assert embedded[-1] == [names[0]] and (run.indexed, run.skipped, run.entries) == (1, 4, 2)
    build_index([copies], tmp_path / "fresh", clap, device="cpu")
    got, fresh = _entries(tmp_path / "idx"), _entries(tmp_path / "fresh")
    assert got.keys() == fresh.keys() and len(Index.load(tmp_path / "idx")) == len(fresh) == 6
    assert run.count == Index.load(tmp_path / "idx").meta["count"] == 6
    for key in fresh:
        np.testing.assert_allclose(got[key], fresh[key], atol=1e-6)
    hits = Index.load(tmp_path / "idx").search(QUERY, top_k=10, all_windows=True)
    assert [(h.file, h.start) for h in hits] == [
        (h.file, h.start) for h in Index.load(tmp_path / "fresh").search(QUERY, top_k=10, all_windows=True)
    ]


def test_an_interrupted_run_leaves_whole_shards_and_a_rerun_completes_it(setup, tmp_path, monkeypatch):
    root, clap, audio, sounds, _ = setup
    out = tmp_path / "idx"
    _count_embedded(monkeypatch, fail_at=2)
    with pytest.raises(RuntimeError, match="killed"):
        build_index([audio], out, clap, device="cpu", shard_size=1)  # a shard per file
    assert sorted(os.listdir(out)) == ["meta.json", "part-00000.npz"] and stale_temps(out, ".npz") == []
    assert Index.load(out).files == [str(sorted(audio.rglob("*.wav"))[0])]
    embedded = _count_embedded(monkeypatch)
    run = build_index([audio], out, clap, device="cpu", shard_size=1)
    assert (run.indexed, run.skipped, len(embedded[0])) == (6, 1, 6)
    got, whole = _entries(out), _entries(root / "index")
    assert got.keys() == whole.keys() and len(Index.load(out)) == len(whole) == 9
    for key in whole:
        np.testing.assert_allclose(got[key], whole[key], atol=1e-6)


def test_an_index_refuses_another_checkpoint_window_or_folder_in_one_line(setup, tmp_path):
    root, clap, audio, sounds, _ = setup
    other = tmp_path / "other"
    other.symlink_to(clap, target_is_directory=True)  # another source, as named
    with pytest.raises(UsageError, match=r"index of .*/clap, not of .*/other: index into another --out"):
        build_index([audio], root / "index", other, device="cpu")
    with pytest.raises(UsageError, match=r"the index's --window is 1 s, not 0.5 s"):
        build_index([audio], root / "index", clap, window=0.5, device="cpu")
    with pytest.raises(UsageError, match=r"--window 2 s is longer than the model's clip \(1 s\)"):
        build_index([audio], tmp_path / "new", clap, window=2.0, device="cpu")
    with pytest.raises(UsageError, match="is a folder that is not a search index"):
        build_index([audio], audio, clap, device="cpu")
    with pytest.raises(DatasetError, match="is not a search index"):
        Index.load(audio)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "meta.json").write_text((root / "index" / "meta.json").read_text())
    (tmp_path / "broken" / "part-00000.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match=r"part-00000.npz: is not a search index shard"):
        Index.load(tmp_path / "broken")
