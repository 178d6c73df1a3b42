"""Shared pieces of the fuzz tests: the invariant every target must keep, seed files, and mutations.

The invariant (:func:`outcome`): a call returns, or raises a :class:`~sed.errors.SedError` whose
message is one printable line naming the file; any other exception fails the test, and so do a
hang (an alarm, and a faulthandler exit for a hang inside C code), a large allocation (peak RSS
growth per example) and a ``MemoryError`` hidden as the context of the error.
"""

from __future__ import annotations

import csv
import errno
import faulthandler
import io
import math
import os
import signal
import struct
from collections.abc import Callable
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import settings
from hypothesis import strategies as st

from sed.errors import SedError, printable

#: seconds one call may run (raised to a failure), and then the grace before faulthandler exits
TIME_LIMIT_S = 20
#: how much one call may raise the peak resident memory (the seeds decode to well under 1 MiB)
MAX_RSS_GROWTH_KIB = 512 << 10
_PROC = Path("/proc/self")


#: examples per target of the long profile (``pytest --hypothesis-profile long``)
LONG_EXAMPLES = 10_000


def scaled(fraction: float) -> settings:
    """``settings`` running ``fraction`` of the ci profile's examples (for a slow target); the long
    profile runs every target :data:`LONG_EXAMPLES` times."""
    n = settings.default.max_examples
    return settings(max_examples=n if n >= LONG_EXAMPLES else max(1, math.ceil(n * fraction)))


# ---------------------------------------------------------------------- the invariant


class Hang(BaseException):
    """Not an Exception: a library's ``except Exception`` must not turn a hang into an error message."""


def _kib(field: str) -> int:
    return int((_PROC / "status").read_text().split(f"{field}:")[1].split()[0])


@contextmanager
def watchdog(seconds: int = TIME_LIMIT_S, max_growth_kib: int = MAX_RSS_GROWTH_KIB):
    """:class:`Hang` after ``seconds``; fail when the body raised the peak RSS by ``max_growth_kib`` or
    more."""

    def alarm(*_):
        raise Hang(f"still running after {seconds} s")

    measured = (_PROC / "clear_refs").exists()
    if measured:
        (_PROC / "clear_refs").write_text("5")  # VmHWM := VmRSS
        start = _kib("VmRSS")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(seconds * 3, exit=True)  # a hang in C code never sees the alarm
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if measured:
        grown = _kib("VmHWM") - start
        assert grown < max_growth_kib, f"peak RSS grew by {grown >> 10} MiB"


def check_error(err: SedError, *paths: str | os.PathLike) -> None:
    """``err`` is one printable line that names one of ``paths`` and hides no resource exhaustion."""
    msg = str(err)
    assert msg.isprintable(), f"not one printable line: {msg!r}"
    assert len(msg) <= 1000, f"message of {len(msg)} characters: {msg[:200]!r}..."
    assert any(printable(os.fspath(p)) in msg for p in paths), f"{msg!r} names none of {paths}"
    ctx = err.__context__
    while ctx is not None:  # an allocation that failed is a bug even when reported well
        assert not isinstance(ctx, MemoryError), f"{msg!r} hides {ctx!r}"
        ctx = ctx.__context__


def outcome(call: Callable, *paths: str | os.PathLike):
    """``call()``'s result, or the SedError it raised (checked with :func:`check_error`)."""
    with watchdog():
        try:
            return call()
        except SedError as err:
            check_error(err, *paths)
            return err


# ---------------------------------------------------------------------- file names

#: names with control characters and spaces: an error must escape them, ``err.path`` keeps them
STEMS = st.sampled_from(["f", "a\nb", "\x1b[31m", "tab\tbed", "sp ace", "é"])


# ---------------------------------------------------------------------- audio seeds


def _signal(frames: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(channels)
    t = np.arange(frames) / 16000
    x = np.stack([0.4 * np.sin(2 * np.pi * (300 + 200 * c) * t) for c in range(channels)], axis=1)
    return (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)


#: name -> (container, subtype, channels, sample rate, frames): ~0.2 s clips
SEEDS = {
    "pcm16_mono.wav": ("WAV", "PCM_16", 1, 16000, 3200),
    "float_stereo.wav": ("WAV", "FLOAT", 2, 8000, 1600),
    "pcm24_stereo.wav": ("WAV", "PCM_24", 2, 22050, 4410),
    "mono.flac": ("FLAC", "PCM_16", 1, 16000, 3200),
    "stereo.flac": ("FLAC", "PCM_24", 2, 44100, 8820),
    "mono.ogg": ("OGG", "VORBIS", 1, 16000, 3200),
    "stereo.ogg": ("OGG", "VORBIS", 2, 22050, 4410),
}


@cache
def seed_bytes(name: str) -> bytes:
    fmt, subtype, channels, sr, frames = SEEDS[name]
    buf = io.BytesIO()
    sf.write(buf, _signal(frames, channels), sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def seeds(ext: str) -> st.SearchStrategy[str]:
    return st.sampled_from([n for n in SEEDS if n.endswith(ext)])


# ---------------------------------------------------------------------- byte-level mutations

#: integers that break size, rate and count fields
EDGE_U32 = (0, 1, 2, 3, 7, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


def _at(data: bytes, pos: int) -> int:
    return pos % (len(data) + 1)


def _flip(data, pos, bit):
    if not data:
        return data
    i = pos % len(data)
    return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]


def _overwrite(data, pos, blob):
    i = _at(data, pos)
    return data[:i] + blob + data[i + len(blob) :]


def _insert(data, pos, blob):
    i = _at(data, pos)
    return data[:i] + blob + data[i:]


def _delete(data, pos, n):
    i = _at(data, pos)
    return data[:i] + data[i + n :]


def _duplicate(data, pos, n):
    i = _at(data, pos)
    return data[: i + n] + data[i : i + n] + data[i + n :]


def _truncate(data, pos):
    return data[: _at(data, pos)]


BYTE_OPS = {
    "flip": _flip,
    "overwrite": _overwrite,
    "insert": _insert,
    "delete": _delete,
    "duplicate": _duplicate,
    "truncate": _truncate,
}

_pos = st.integers(0, 1 << 16)
_blob = st.one_of(
    st.binary(min_size=1, max_size=16), st.sampled_from(EDGE_U32).map(lambda v: struct.pack("<I", v))
)


def byte_ops(pos: st.SearchStrategy[int] = _pos) -> st.SearchStrategy[tuple]:
    """One byte-level mutation at a position drawn from ``pos`` (taken modulo the length + 1)."""
    return st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("overwrite"), pos, _blob),
        st.tuples(st.just("insert"), pos, _blob),
        st.tuples(st.just("delete"), pos, st.integers(1, 64)),
        st.tuples(st.just("duplicate"), pos, st.integers(1, 512)),
        st.tuples(st.just("truncate"), pos),
    )


byte_mutations = byte_ops()


def apply_bytes(data: bytes, op: tuple) -> bytes:
    return BYTE_OPS[op[0]](data, *op[1:])


def near(boundaries, data_len: int, spread: int = 24) -> st.SearchStrategy[int]:
    """Positions within ``spread`` bytes of a region boundary, or anywhere in the data."""
    close = st.sampled_from(sorted(set(boundaries))).flatmap(
        lambda b: st.integers(max(b - spread, 0), b + spread)
    )
    return st.one_of(close, st.integers(0, data_len))


def mutants(data: bytes, pos: st.SearchStrategy[int] = _pos, max_ops: int = 3) -> st.SearchStrategy[bytes]:
    """``data`` after 1 to ``max_ops`` byte-level mutations."""

    def apply(ops):
        out = data
        for op in ops:
            out = apply_bytes(out, op)
        return out

    return st.lists(byte_ops(pos), min_size=1, max_size=max_ops).map(apply)


# ---------------------------------------------------------------------- RIFF/WAVE structure


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (id, payload) chunks after ``RIFF....WAVE``."""
    out, pos = [], 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        out.append((cid, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return out


def riff_bytes(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(cid + struct.pack("<I", len(p)) + p + b"\0" * (len(p) & 1) for cid, p in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


#: fmt chunk fields: name -> (offset in the payload, struct code)
FMT_FIELDS = {
    "format_tag": (0, "<H"),
    "channels": (2, "<H"),
    "sample_rate": (4, "<I"),
    "byte_rate": (8, "<I"),
    "block_align": (12, "<H"),
    "bits": (14, "<H"),
}


def _chunk_region(data: bytes, cid: bytes) -> tuple[int, int] | None:
    """(offset of the chunk header, end of its payload) of the first chunk ``cid``."""
    pos = 12
    while pos + 8 <= len(data):
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if data[pos : pos + 4] == cid:
            return pos, min(len(data), pos + 8 + size)
        pos += 8 + size + (size & 1)
    return None


def _fmt_field(data, name, value):
    region = _chunk_region(data, b"fmt ")
    if region is None:
        return data
    off, code = FMT_FIELDS[name]
    width = struct.calcsize(code)
    return _overwrite(data, region[0] + 8 + off, struct.pack(code, value % (1 << (8 * width))))


def _size_field(data, cid, value):
    """Set the declared size of chunk ``cid`` (``RIFF``: the whole file's) without moving bytes."""
    region = (0, len(data)) if cid == b"RIFF" else _chunk_region(data, cid)
    return data if region is None else _overwrite(data, region[0] + 4, struct.pack("<I", value))


def _truncate_in(data, cid, fraction):
    """Cut the file inside chunk ``cid`` (``RIFF``: inside the 12-byte file header)."""
    start, end = (0, 12) if cid == b"RIFF" else (_chunk_region(data, cid) or (0, len(data)))
    return data[: start + int((end - start) * fraction)]


def _chunk_op(data, op, index, cid=b"junk", payload=b""):
    chunks = riff_chunks(data)
    i = index % (len(chunks) + 1)
    if op == "insert_chunk":
        chunks.insert(i, (cid, payload))
    elif chunks and op == "duplicate_chunk":
        chunks.insert(i, chunks[i % len(chunks)])
    elif chunks and op == "drop_chunk":
        del chunks[i % len(chunks)]
    return riff_bytes(chunks)


_cids = st.sampled_from([b"fmt ", b"data", b"fact", b"LIST", b"junk", b"PEAK", b"\0\0\0\0"])
_field_value = st.one_of(st.sampled_from(EDGE_U32), st.integers(0, 0xFFFFFFFF))
wav_mutations = st.one_of(
    st.tuples(st.just("fmt_field"), st.sampled_from(sorted(FMT_FIELDS)), _field_value),
    st.tuples(
        st.just("size_field"),
        st.sampled_from([b"RIFF", b"fmt ", b"data"]),
        st.one_of(st.sampled_from(EDGE_U32), st.integers(0, 1 << 20)),
    ),
    st.tuples(
        st.just("truncate_in"),
        st.sampled_from([b"RIFF", b"fmt ", b"data", b"fact"]),
        st.floats(0, 1, exclude_max=True),
    ),
    st.tuples(st.just("chunk"), st.just("insert_chunk"), st.integers(0, 8), _cids, st.binary(max_size=64)),
    st.tuples(st.just("chunk"), st.sampled_from(["duplicate_chunk", "drop_chunk"]), st.integers(0, 8)),
    byte_mutations,
)
WAV_OPS = {
    "fmt_field": _fmt_field,
    "size_field": _size_field,
    "truncate_in": _truncate_in,
    "chunk": _chunk_op,
}


def apply_wav(data: bytes, op: tuple) -> bytes:
    return WAV_OPS[op[0]](data, *op[1:]) if op[0] in WAV_OPS else apply_bytes(data, op)


# ---------------------------------------------------------------------- FLAC and Ogg headers

#: FLAC STREAMINFO bit fields in the 64 bits at byte 18: name -> (shift, width)
FLAC_FIELDS = {
    "sample_rate": (44, 20),
    "channels_minus_1": (41, 3),
    "bits_minus_1": (36, 5),
    "total_samples": (0, 36),
}


def _flac_field(data, name, value):
    if data[:4] != b"fLaC" or len(data) < 26:
        return data
    shift, width = FLAC_FIELDS[name]
    word = int.from_bytes(data[18:26], "big")
    mask = ((1 << width) - 1) << shift
    word = (word & ~mask) | ((value % (1 << width)) << shift)
    return data[:18] + word.to_bytes(8, "big") + data[26:]


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for b in page:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def fix_ogg_crcs(data: bytes) -> bytes:
    """Recompute the checksum of every complete Ogg page (so that a mutation is decoded, not skipped)."""
    out, pos = bytearray(data), data.find(b"OggS")
    while 0 <= pos and pos + 27 <= len(data):
        nseg = data[pos + 26]
        end = pos + 27 + nseg + sum(data[pos + 27 : pos + 27 + nseg])
        if end > len(data):
            break
        page = bytearray(out[pos:end])
        page[22:26] = b"\0\0\0\0"
        out[pos + 22 : pos + 26] = struct.pack("<I", _ogg_crc(bytes(page)))
        pos = data.find(b"OggS", end)
    return bytes(out)


def _vorbis_field(data, name, value):
    """Vorbis identification header: channels (1 byte) and sample rate (u32) after b'\\x01vorbis' +
    version."""
    i = data.find(b"\x01vorbis")
    if i < 0:
        return data
    off, code = {"channels": (11, "<B"), "sample_rate": (12, "<I")}[name]
    return _overwrite(data, i + off, struct.pack(code, value % (1 << (8 * struct.calcsize(code)))))


compressed_mutations = st.one_of(
    st.tuples(
        st.just("flac_field"),
        st.sampled_from(sorted(FLAC_FIELDS)),
        st.one_of(
            st.sampled_from((0, 1, 2, 7, (1 << 20) - 1, (1 << 36) - 1, 1 << 35)), st.integers(0, 1 << 36)
        ),
    ),
    st.tuples(st.just("vorbis_field"), st.sampled_from(["channels", "sample_rate"]), _field_value),
    byte_mutations,
)


def apply_compressed(data: bytes, op: tuple, fix_crc: bool) -> bytes:
    if op[0] == "flac_field":
        return _flac_field(data, *op[1:])
    data = _vorbis_field(data, *op[1:]) if op[0] == "vorbis_field" else apply_bytes(data, op)
    return fix_ogg_crcs(data) if fix_crc else data


# ---------------------------------------------------------------------- text files

#: bytes that make a text file undecodable or odd: invalid UTF-8, NUL, BOM, a lone CR
BAD_BYTES = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf", b"\r", b"\x80abc"])


@st.composite
def corrupted(draw, text: str) -> bytes:
    """``text`` as UTF-8, with a few bad byte sequences inserted at drawn positions."""
    data = text.encode("utf-8")
    for pos, bad in draw(st.lists(st.tuples(_pos, BAD_BYTES), max_size=2)):
        data = _insert(data, pos, bad)
    return data


def csv_text(rows: list[list[str]], delimiter: str = ",", quoted: bool = True) -> str:
    """Rows as CSV: through :mod:`csv` (quoting what needs it) or joined raw."""
    if not quoted:
        return "".join(delimiter.join(r) + "\n" for r in rows)
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return buf.getvalue()


#: text cells that break parsers: numbers out of range, NaN/inf, digits past int limits, huge fields
odd_cells = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "1e400",
            "-1e400",
            "-1",
            "-0",
            "0x10",
            "1_0",
            "+3",
            "3.7",
            "1e18",
            str(2**63),
            "9" * 5000,
            '"',
            "\x00",
            "a\nb",
            "\x1b[31m",
        ]
    ),
    st.integers(200_000, 300_000).map(lambda n: "x" * n),  # past csv's field size limit (131072)
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
    st.text(max_size=12),
)


# ---------------------------------------------------------------------- output faults

#: the ways writing an output fails; root ignores permission bits and a real full disk is out of
#: reach, so each is a monkeypatch that fails the way the system call would
OUTPUT_FAULTS = ("none", "read_only", "temp", "full_disk", "fsync", "replace")


def _under(path, root: Path) -> bool:
    path = Path(os.fsdecode(path)).absolute()
    return path == root or root in path.parents


class _FullFile:
    """A file whose every ``write`` fails with ``ENOSPC``."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@contextmanager
def output_fault(fault: str, root: str | os.PathLike):
    """Writes under ``root`` fail as ``fault`` says: ``read_only`` (``os.access`` says no),
    ``temp`` (creating the temporary: ``EACCES``), ``full_disk`` (every ``write`` of a file opened with
    :func:`open`, and every ``fsync``: ``ENOSPC``), ``fsync`` (``ENOSPC`` there only: a disk that
    fills up late), ``replace`` (the final rename: ``EROFS``); ``none`` changes nothing."""
    import builtins
    import tempfile

    import pytest

    root = Path(root).absolute()
    real_open, real_access, real_mkstemp, real_replace = (
        builtins.open,
        os.access,
        tempfile.mkstemp,
        os.replace,
    )

    def nospace(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def opener(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        writing = (
            isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and _under(file, root)
        )
        return _FullFile(f) if writing else f

    def access(path, mode, *args, **kwargs):
        return False if mode & os.W_OK and _under(path, root) else real_access(path, mode, *args, **kwargs)

    def mkstemp(suffix=None, prefix=None, dir=None, *args, **kwargs):  # noqa: A002 - tempfile's name
        if dir is not None and _under(dir, root):
            name = os.path.join(dir, f"{prefix or ''}xxxxxxxx{suffix or ''}")
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
        return real_mkstemp(suffix, prefix, dir, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if _under(dst, root):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), src, None, dst)
        return real_replace(src, dst, *args, **kwargs)

    patches = {
        "none": [],
        "read_only": [(os, "access", access)],
        "temp": [(tempfile, "mkstemp", mkstemp)],
        "full_disk": [(builtins, "open", opener), (os, "fsync", nospace)],
        "fsync": [(os, "fsync", nospace)],
        "replace": [(os, "replace", replace)],
    }[fault]
    with pytest.MonkeyPatch.context() as mp:
        for target, name, value in patches:
            mp.setattr(target, name, value)
        yield
