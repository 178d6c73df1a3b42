"""FeatureCache: keyed by front end and file state, atomic, equal to direct extraction."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.audio.features import FeatureStandardizer, FOALogMelIV, MicLogMelGCC
from sed.audio.io import load_audio
from sed.data.modules import feature_cache as fc
from sed.data.modules.feature_cache import FeatureCache, fit_standardizer
from sed.errors import AudioError, OutputError

SR = 24000


class Counting(FOALogMelIV):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forward(self, wave):
        self.calls += 1
        return super().forward(wave)


def _wav(path, seconds=2.0, seed=0, channels=4, sr=SR):
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, (int(seconds * sr), channels))
    sf.write(path, x, sr, subtype="PCM_16")
    return path


def _entries(cache):
    return sorted(p.name for p in cache.dir.iterdir() if p.suffix == ".npy") if cache.dir.exists() else []


def _all_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_second_get_loads_and_equals_direct_extraction(tmp_path):
    wav = _wav(tmp_path / "a.wav")
    front = Counting()
    cache = FeatureCache(tmp_path / "cache", front)
    first = cache.get(wav)
    assert front.calls == 1 and cache.is_cached(wav)
    second = cache.get(wav)
    assert front.calls == 1 and torch.equal(first, second)
    wave, _ = load_audio(wav, SR, num_channels=4)
    direct = FOALogMelIV()(wave)[0]
    assert first.shape == (7, 100, 64) and torch.equal(first, direct)
    assert torch.equal(cache.get(wav, 10, 30), direct[:, 10:30]) and front.calls == 1
    assert (cache.dir / "config.json").is_file() and cache.dir.name.startswith("Counting-")
    # a new cache object over the same folder and parameters reuses the entry
    again = Counting()
    assert torch.equal(FeatureCache(tmp_path / "cache", again).get(wav), first) and again.calls == 0


def test_touching_or_rewriting_the_file_invalidates(tmp_path):
    wav = _wav(tmp_path / "a.wav")
    front = Counting()
    cache = FeatureCache(tmp_path / "cache", front)
    old = cache.get(wav)
    (entry,) = _entries(cache)
    st = os.stat(wav)
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same content
    assert not cache.is_cached(wav)
    assert torch.equal(cache.get(wav), old) and front.calls == 2
    assert len(_entries(cache)) == 1 and _entries(cache) != [entry]  # stale entry replaced
    _wav(wav, seed=1)  # same size, new content
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    new = cache.get(wav)
    assert front.calls == 3 and not torch.equal(new, old) and len(_entries(cache)) == 1
    _wav(wav, seconds=3.0, seed=1)  # new size
    assert cache.get(wav).shape[1] == 150 and front.calls == 4
    # another file with the same stem in another folder has its own entry
    (tmp_path / "b").mkdir()
    other = _wav(tmp_path / "b" / "a.wav", seed=2)
    cache.get(other)
    assert len(_entries(cache)) == 2 and front.calls == 5 and cache.get(wav).shape[1] == 150


def test_changed_frontend_parameters_use_another_folder(tmp_path):
    wav = _wav(tmp_path / "a.wav")
    a = FeatureCache(tmp_path / "cache", FOALogMelIV())
    b = FeatureCache(tmp_path / "cache", FOALogMelIV(n_mels=32))
    c = FeatureCache(tmp_path / "cache", FOALogMelIV(chunk_frames=7))  # speed only: same features
    m = FeatureCache(tmp_path / "cache", MicLogMelGCC())
    assert a.dir != b.dir and a.dir == c.dir and a.dir != m.dir and m.dir.name.startswith("MicLogMelGCC-")
    front = Counting(n_mels=32)
    d = FeatureCache(tmp_path / "cache", front)
    assert a.get(wav).shape == (7, 100, 64)
    assert d.get(wav).shape == (7, 100, 32) and front.calls == 1
    assert m.get(wav).shape == (10, 100, 64)
    assert len(list((tmp_path / "cache").iterdir())) == 3
    with pytest.raises(TypeError, match="config"):
        FeatureCache(tmp_path / "cache", torch.nn.Identity())


def test_writes_are_atomic(tmp_path, monkeypatch):
    wav = _wav(tmp_path / "a.wav")
    cache = FeatureCache(tmp_path / "cache", FOALogMelIV())

    def broken_save(path, arr, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(fc.np, "save", broken_save)
    with pytest.raises(OutputError, match="cannot write: disk full"):  # one line naming the entry
        cache.get(wav)
    assert _all_files(tmp_path / "cache") == [f"{cache.dir.name}/config.json"]
    monkeypatch.undo()

    class Failing(FOALogMelIV):
        def forward(self, wave):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        FeatureCache(tmp_path / "other", Failing()).get(wav)
    assert not (tmp_path / "other").exists() or _all_files(tmp_path / "other") == []
    # a corrupt entry (e.g. from another tool) is computed again and replaced
    good = cache.get(wav)
    cache.entry(wav).write_bytes(b"garbage")
    assert torch.equal(cache.get(wav), good) and np.load(cache.entry(wav)).shape == (7, 100, 64)


def test_warm_reports_bad_files_and_goes_on(tmp_path, capsys):
    good = [_wav(tmp_path / f"g{i}.wav", seed=i) for i in range(3)]
    stereo = _wav(tmp_path / "stereo.wav", channels=2)
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    missing = tmp_path / "missing.wav"
    front = Counting()
    cache = FeatureCache(tmp_path / "cache", front)
    cache.get(good[0])
    failures = cache.warm([good[0], stereo, good[1], text, missing, good[2]], progress=True)
    assert all(isinstance(e, AudioError) for e in failures)
    assert sorted(e.path for e in failures) == sorted(
        str(p.resolve()) if p == missing else str(p) for p in (stereo, text, missing)
    )
    assert "channel" in str(next(e for e in failures if e.path == str(stereo)))
    assert front.calls == 3 and all(cache.is_cached(p) for p in good)
    err = capsys.readouterr().err
    assert "features" in err and "stereo.wav" in err
    threads = torch.get_num_threads()
    assert cache.warm(good, progress=False, num_threads=1) == [] and front.calls == 3
    assert torch.get_num_threads() == threads
    with pytest.raises(AudioError, match="stereo.wav"):
        cache.get(stereo)


def test_fit_standardizer_over_cached_features(tmp_path):
    files = [_wav(tmp_path / f"{i}.wav", seconds=1.0 + i, seed=i) for i in range(3)]
    cache = FeatureCache(tmp_path / "cache", FOALogMelIV())
    std = fit_standardizer(cache, files)
    ref = FeatureStandardizer(7, 64).fit(cache.compute(f) for f in files)
    assert std.fitted and torch.allclose(std.mean, ref.mean) and torch.allclose(std.scale, ref.scale)
    assert len(_entries(cache)) == 3
    with pytest.raises(ValueError):
        fit_standardizer(cache, [])
