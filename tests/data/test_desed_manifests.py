"""Strong labels in JSONL manifests and shards: written, read back, moved with a crop; bad events one line."""

from __future__ import annotations

import json

import pytest

from sed.data.corpora.desed import read_strong_tsv
from sed.data.corpora.folder import manifest_items
from sed.data.modules.detection_dataset import DetectionClips
from sed.data.shards.reader import ShardClips
from sed.data.shards.writer import read_source, write_shards
from sed.data.synth.desed import make_desed
from sed.errors import DatasetError

SR = 8000


@pytest.fixture(scope="module")
def strong_manifest(tmp_path_factory):
    """The synthetic strong set as a JSONL manifest with ``events`` (no ``label``: the events' classes)."""
    root = tmp_path_factory.mktemp("desed")
    summary = make_desed(root, seed=4, num_classes=3, clips=3, duration=2.0, sample_rate=SR)
    table = read_strong_tsv(summary["strong_tsv"], summary["classes"])
    manifest = root / "strong.jsonl"
    rows = [{"path": f"{summary['strong']}/{n}", "events": [list(e) for e in ev]} for n, ev in table.items()]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest, summary, table


def test_manifest_events_become_item_events(strong_manifest):
    manifest, summary, table = strong_manifest
    items, names, multi = manifest_items(manifest, summary["classes"])
    assert multi and names == summary["classes"]
    for it, (name, events) in zip(items, table.items()):
        assert it.path.endswith(name)
        assert it.events == tuple((a, b, names.index(c)) for a, b, c in events)
        assert it.label == sorted({names.index(c) for _, _, c in events})
    clips = DetectionClips(items, names, source="strong", sample_rate=SR, clip_seconds=2.0)
    item = clips[0]
    assert item["events"] == list(items[0].events) and item["weak"].sum() == len(set(items[0].label))


def test_shards_carry_events_and_the_reader_moves_them_with_the_crop(strong_manifest, tmp_path):
    manifest, summary, table = strong_manifest
    names = summary["classes"]
    write_shards(read_source(manifest, labels=names), tmp_path / "shards", shard_size=2)
    whole = list(ShardClips(tmp_path / "shards", names, sample_rate=SR, clip_seconds=None))
    expect = {n: [(a, b, names.index(c)) for a, b, c in ev] for n, ev in table.items()}
    assert {it["source"].rsplit("/", 1)[-1]: it["events"] for it in whole} == expect
    cropped = list(ShardClips(tmp_path / "shards", names, sample_rate=SR, clip_seconds=0.5))  # the centre
    for it in cropped:
        t0 = 0.75
        want = [
            (max(a, t0) - t0, min(b, t0 + 0.5) - t0, k)
            for a, b, k in expect[it["source"].rsplit("/", 1)[-1]]
            if b > t0 and a < t0 + 0.5
        ]
        assert it["events"] == pytest.approx(want)


@pytest.mark.parametrize(
    "events,reason",
    [
        ('[[2, 1, "Dog"]]', "line 1: event [2, 1, 'Dog'] needs onset <= offset"),
        ('[[-1, 1, "Dog"]]', "line 1: onset must be a finite time >= 0, got -1"),
        ("[[0, 1]]", "line 1: event [0, 1] is not [onset, offset, label]"),
        ('[[0, 1, "Horse"]]', "line 1: label 'Horse' is not one of the labels"),
        ('{"a": 1}', "line 1: events must be a list of [onset, offset, label]"),
        ('[[0, "x", "Dog"]]', "line 1: offset 'x' is not a number of seconds"),
    ],
)
def test_bad_manifest_events_are_one_line(tmp_path, events, reason):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(f'{{"path": "a.wav", "events": {events}}}\n')
    with pytest.raises(DatasetError) as e:
        manifest_items(manifest, ["Dog", "Cat"])
    assert str(e.value).startswith(f"{manifest}: {reason}") and "\n" not in str(e.value)
