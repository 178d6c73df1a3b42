"""Property-based fuzz tests of the shard reader (:class:`~sed.data.shards.reader.ShardClips`, as
``sedkit predict`` and ``classify --shards`` read shards).

Targets: the tar structure (a seed shard written by ``write_shards``' format, mutated byte-wise near
every header and data boundary: truncated, garbage, flipped sizes), tars built member by member from
hostile parts (names with folders, ``..``, absolute or without an extension, keys met twice, links,
directories, FIFOs, huge declared sizes, members cut short), members (seed audio mutated, random
bytes, random JSON), and ``index.json`` (random JSON, entries of the wrong shape).

The invariant: reading yields samples (a finite mono waveform and a label of the label list) and
failure items (``error`` a printable line, flagged ``pad``), each failure one printable ``error:``
line on stderr naming the shard; or it raises one :class:`~sed.errors.SedError` line naming the
index. Never another exception, a hang or a large allocation (the watchdog of ``strategies``).
"""

from __future__ import annotations

import io
import json
import tarfile
from contextlib import redirect_stderr
from pathlib import Path

import torch
from hypothesis import given
from hypothesis import strategies as st

from sed.data.shards.reader import ShardClips
from sed.errors import SedError
from tests.fuzz.strategies import check_error, mutants, near, scaled, seed_bytes, watchdog

LABELS = ["a", "b"]
SHARD = "shard-000000.tar"


def _meta(label="a", fold=1) -> bytes:
    return json.dumps({"labels": [label], "fold": fold}).encode()


def _tar(members) -> bytes:
    """A tar of ``members``: (name, data, TarInfo changes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, change in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for k, v in change.items():
                setattr(info, k, v)
            tar.addfile(info, io.BytesIO(data) if info.isreg() and info.size <= len(data) else None)
    return buf.getvalue()


SEED_MEMBERS = [
    ("00000000.flac", seed_bytes("mono.flac"), {}),
    ("00000000.json", _meta("a"), {}),
    ("00000001.wav", seed_bytes("pcm16_mono.wav"), {}),
    ("00000001.json", _meta("b", 2), {}),
]
SEED = _tar(SEED_MEMBERS)
BOUNDARIES = (
    [m.offset for m in tarfile.open(fileobj=io.BytesIO(SEED)).getmembers()]
    + [m.offset_data for m in tarfile.open(fileobj=io.BytesIO(SEED)).getmembers()]
    + [len(SEED)]
)
INDEX = {"labels": LABELS, "shards": [{"name": SHARD, "count": 2, "folds": {"1": 1, "2": 1}}]}


def _read(folder: Path, index: object) -> None:
    """The invariant for the shard folder ``folder`` with ``index`` as its index.json."""
    (folder / "index.json").write_text(json.dumps(index))
    err = io.StringIO()
    with watchdog(), redirect_stderr(err):
        try:
            items = list(ShardClips(folder, labels=LABELS, clip_seconds=None))
        except SedError as e:
            check_error(e, folder / "index.json")
            return
    lines = err.getvalue().splitlines()
    failed = [i for i in items if "error" in i]
    assert len(lines) == len(failed), lines
    for line in lines:
        assert line.startswith("error: ") and line.isprintable() and str(folder / SHARD) in line, line
    for item in items:
        if "error" in item:
            assert item["pad"] and item["error"].isprintable() and str(folder / SHARD) in item["path"]
        else:
            wave = item["wave"]
            assert wave.ndim == 1 and item["length"] == wave.shape[0] > 0 and torch.isfinite(wave).all()
            assert item["label"] in (0, 1)


@scaled(0.5)
@given(data=mutants(SEED, near(BOUNDARIES, len(SEED))))
def test_mutated_tar(scratch, data):
    folder = scratch()
    (folder / SHARD).write_bytes(data)
    _read(folder, INDEX)


NAMES = st.sampled_from(
    [
        "00000002.flac",
        "00000002.json",
        "00000000.flac",
        "00000000.json",
        "sub/00000003.flac",
        "../../00000003.json",
        "/abs/00000004.wav",
        "00000005",
        ".json",
        "00000006.",
        "a\nb.json",
        "00000007.FLAC",
        "00000008.tar.gz",
        "x" * 120 + ".wav",
    ]
)
TYPES = st.sampled_from(
    [
        {},
        {},
        {},
        {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"},
        {"type": tarfile.LNKTYPE, "linkname": "00000000.flac"},
        {"type": tarfile.DIRTYPE},
        {"type": tarfile.FIFOTYPE},
        {"size": 3 << 30},
        {"size": 1 << 20},
        {"mode": 0},
    ]
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
METAS = st.one_of(
    st.builds(_meta, st.sampled_from(LABELS + ["zebra", ""]), st.sampled_from([1, 2, None])),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"labels": JSON, "fold": JSON}).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)
AUDIO = st.one_of(
    st.sampled_from(["mono.flac", "stereo.flac", "pcm16_mono.wav", "float_stereo.wav"]).map(seed_bytes),
    st.sampled_from(["mono.flac", "pcm16_mono.wav"]).flatmap(lambda n: mutants(seed_bytes(n))),
    st.binary(max_size=256),
)


def _data(name: str) -> st.SearchStrategy[bytes]:
    return METAS if name.endswith(".json") else AUDIO


MEMBERS = st.lists(NAMES.flatmap(lambda n: st.tuples(st.just(n), _data(n), TYPES)), max_size=6)


@scaled(0.5)
@given(extra=MEMBERS, cut=st.one_of(st.none(), st.integers(0, 1 << 14)), at=st.integers(0, 4))
def test_hostile_members(scratch, extra, cut, at):
    folder = scratch()
    members = SEED_MEMBERS[:at] + extra + SEED_MEMBERS[at:]
    data = _tar(members)
    (folder / SHARD).write_bytes(data if cut is None else data[:cut])
    _read(folder, INDEX)


SHARD_ENTRY = st.fixed_dictionaries(
    {
        "name": st.sampled_from([SHARD, "", "../x.tar", 3]),
        "folds": st.one_of(
            JSON,
            st.dictionaries(st.sampled_from(["1", "2", "x", "None"]), st.integers(-2, 5) | JSON, max_size=3),
        ),
    },
    optional={"fold_labels": JSON, "count": JSON},
)


@scaled(0.5)
@given(
    index=st.one_of(
        JSON,
        st.fixed_dictionaries(
            {
                "labels": st.one_of(st.just(LABELS), JSON),
                "shards": st.one_of(st.lists(SHARD_ENTRY, max_size=2), JSON),
            }
        ),
    )
)
def test_random_index(scratch, index):
    folder = scratch()
    (folder / SHARD).write_bytes(SEED)
    _read(folder, index)
