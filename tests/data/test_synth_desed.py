"""The synthetic DESED corpus: its layout, its determinism, and events where the energy is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sed.data.corpora.desed import (
    DESED_CLASSES,
    DESED_LAYOUT,
    read_durations_tsv,
    read_strong_tsv,
    read_weak_tsv,
    unlabeled_files,
)
from sed.data.synth.desed import make_desed

TINY = dict(num_classes=3, clips=3, duration=2.0, sample_rate=8000)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("desed")
    return root, make_desed(root, seed=5, **TINY)


def test_layout_and_tables_read_back(corpus):
    root, summary = corpus
    assert summary["classes"] == DESED_CLASSES[:3]
    folders = {
        k: root / DESED_LAYOUT[k][0].replace("_16k", "")
        for k in ("strong", "weak", "unlabeled", "val", "test")
    }
    for key, folder in folders.items():
        assert sorted(p.name for p in folder.iterdir()) == [f"{key}_{i:05d}.wav" for i in range(3)]
        assert summary[key] == str(folder)
    strong = read_strong_tsv(root / DESED_LAYOUT["strong"][1], DESED_CLASSES[:3], folders["strong"])
    assert strong == {k: [tuple(e) for e in v] for k, v in summary["labels"]["strong"].items()}
    weak = read_weak_tsv(root / DESED_LAYOUT["weak"][1], DESED_CLASSES[:3], folders["weak"])
    assert weak == {k: sorted({e[2] for e in v}) for k, v in summary["labels"]["weak"].items()}
    assert unlabeled_files(folders["unlabeled"]) == sorted(summary["labels"]["unlabeled"])
    for split in ("val", "test"):
        events = read_strong_tsv(root / DESED_LAYOUT[split][1], DESED_CLASSES[:3], folders[split])
        assert events == {k: [tuple(e) for e in v] for k, v in summary["labels"][split].items()}
        durations = read_durations_tsv(root / DESED_LAYOUT[f"{split}_durations"][1])
        for name, seconds in durations.items():
            info = sf.info(str(folders[split] / name))
            assert info.samplerate == 8000 and info.frames == round(seconds * 8000)
            assert all(b <= seconds for _, b, _ in events[name])
    assert all(d == 2.0 for d in read_durations_tsv(root / DESED_LAYOUT["val_durations"][1]).values())
    assert all(1.4 <= d <= 2.0 for d in read_durations_tsv(root / DESED_LAYOUT["test_durations"][1]).values())


def test_16k_folders_by_default(tmp_path):
    summary = make_desed(tmp_path, clips=1, duration=1.0, num_classes=1)
    assert Path(summary["strong"]) == tmp_path / DESED_LAYOUT["strong"][0]
    assert sf.info(str(next(Path(summary["weak"]).iterdir()))).samplerate == 16000


def test_events_are_where_the_energy_is(corpus):
    """Inside every labelled event the signal is at least 10 dB louder than outside all events."""
    root, summary = corpus
    for split in ("strong", "weak", "unlabeled", "val", "test"):
        for name, events in summary["labels"][split].items():
            x, sr = sf.read(str(Path(summary[split]) / name))
            assert events and all(0 <= a < b for a, b, _ in events)
            inside = np.zeros(len(x), bool)
            for a, b, _ in events:
                inside[round(a * sr) : round(b * sr)] = True
                assert np.sqrt(np.mean(x[round(a * sr) : round(b * sr)] ** 2)) > 0
            outside = ~inside
            if outside.sum() > sr // 10:
                noise = np.mean(x[outside] ** 2)
                for a, b, _ in events:
                    power = np.mean(x[round(a * sr) : round(b * sr)] ** 2)
                    assert 10 * np.log10(power / noise) > 10, (split, name, a, b)
            ordered = sorted(events)
            assert all(p[1] + 0.2 <= q[0] + 1e-9 for p, q in zip(ordered, ordered[1:]))


def _contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(num_classes=2, clips=2, duration=1.0, sample_rate=8000)
    make_desed(tmp_path / "a", seed=1, **kw)
    make_desed(tmp_path / "b", seed=1, **kw)
    make_desed(tmp_path / "c", seed=2, **kw)
    a, b, c = (_contents(tmp_path / d) for d in "abc")
    assert len(a) == 5 * 2 + 6 and a == b and a != c


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_classes=0),
        dict(num_classes=11),
        dict(clips=0),
        dict(duration=0.5),
        dict(seed=-1),
        dict(sample_rate=10),
    ],
)
def test_bad_arguments_raise_before_writing(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_desed(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())
