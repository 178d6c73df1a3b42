"""Checked reading of what ``sedkit shard`` writes, for :mod:`sed.data.shards.reader`: one shard's tar members
grouped into samples, their audio and ``.json``, and the shape of ``index.json``.

Nothing is read before it is checked: a member whose name is not ``<key>.<ext>`` in the tar's top
folder (no folders, no ``..``, not absolute), that is not a regular file (links, directories,
devices, sparse files), that declares more than :data:`MAX_MEMBER_BYTES` or ends past the end of the
archive is refused without reading a byte of it; audio decodes to at most :data:`MAX_MEMBER_SAMPLES`
samples (a header promising more than the bytes can hold is read block by block); ``index.json`` is
read up to :data:`MAX_INDEX_BYTES`. Each problem is a :class:`Failure` (where, one-line reason).
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf

from sed.audio.io import MAX_EXPANSION
from sed.errors import DatasetError, one_line, short

__all__ = [
    "MAX_INDEX_BYTES",
    "MAX_MEMBER_BYTES",
    "MAX_MEMBER_SAMPLES",
    "Failure",
    "decode_audio",
    "index_problem",
    "read_bounded",
    "sample_meta",
    "tar_samples",
]

#: the largest tar member read (bytes); a member declaring more is refused before any byte of it is read
MAX_MEMBER_BYTES = 256 << 20
#: the most samples (frames x channels) one member's audio may decode to (1 GiB of float32)
MAX_MEMBER_SAMPLES = 1 << 28
#: the largest index.json read
MAX_INDEX_BYTES = 64 << 20


def read_bounded(f, limit: int) -> bytes:
    """At most ``limit`` bytes of ``f``, in chunks (``f.read(limit)`` would allocate ``limit`` at once)."""
    chunks, got = [], 0
    while got < limit:
        chunk = f.read(min(1 << 16, limit - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _counts_problem(counts: Any, what: str) -> str | None:
    if not isinstance(counts, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()
    ):
        return f"{what} is not a map of counts"
    return None


def index_problem(index: Any) -> str | None:
    """What makes ``index`` unlike the index sedkit shard writes (None: nothing)."""
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list) or "labels" not in index:
        return "no labels or shards"
    if not isinstance(index["labels"], list) or not all(isinstance(n, str) for n in index["labels"]):
        return "labels is not a list of names"
    for i, entry in enumerate(index["shards"]):
        if not isinstance(entry, dict):
            return f"shards[{i}] is not an object"
        name = entry.get("name")
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            return f"shards[{i}] has no file name"
        problem = _counts_problem(entry.get("folds"), f"shards[{i}].folds")
        if problem:
            return problem
        if any(not _is_fold(k) for k in entry["folds"]):
            return f"shards[{i}].folds has a key that is not a fold number"
        fold_labels = entry.get("fold_labels", {})
        if not isinstance(fold_labels, dict) or any(
            not _is_fold(k) or _counts_problem(v, "fold_labels") for k, v in fold_labels.items()
        ):
            return f"shards[{i}].fold_labels is not a map of label counts per fold"
    return None


class Failure(NamedTuple):
    """A member (or a whole tar) that gives no sample: where (``<shard>/<key>`` or the shard) and why."""

    where: str
    reason: str


_KINDS = (
    (tarfile.TarInfo.issym, "a symbolic link"),
    (tarfile.TarInfo.islnk, "a hard link"),
    (tarfile.TarInfo.isdir, "a directory"),
    (tarfile.TarInfo.isdev, "a device or FIFO"),
    (tarfile.TarInfo.issparse, "a sparse file"),
)


def _member_problem(member: tarfile.TarInfo, archive_bytes: int | None) -> str | None:
    """Why ``member`` is not a sample file sedkit shard writes (None: it is one): a name that is
    not ``<key>.<ext>`` in the tar's top folder, not a regular file, larger than
    :data:`MAX_MEMBER_BYTES`, or ending past the end of the archive."""
    name = member.name
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        kind = next((k for test, k in _KINDS if test(member)), "a special entry")
        return f"member {short(name)} is {kind}, not a regular file"
    key, dot, ext = name.partition(".")
    if not key or not dot or not ext or "/" in name or "\\" in name or not name.isprintable():
        return f"member {short(name)} is not named <key>.<ext> (no folders, no '..', not absolute)"
    if member.size > MAX_MEMBER_BYTES:
        limit = (
            f"{MAX_MEMBER_BYTES >> 20} MiB" if MAX_MEMBER_BYTES >= 1 << 20 else f"{MAX_MEMBER_BYTES} bytes"
        )
        return f"member {short(name)} declares {member.size} bytes, over the {limit} limit"
    if archive_bytes is not None and member.offset_data + member.size > archive_bytes:
        return f"member {short(name)} declares {member.size} bytes past the end of the archive: truncated tar"
    return None


def _archive_bytes(url: str) -> int | None:
    try:
        return os.stat(url).st_size if "://" not in url and not url.startswith("pipe:") else None
    except OSError:
        return None


def _read_tar(url: str) -> Iterator[tuple[str, str, bytes] | Failure]:
    """``(key, ext, data)`` of each member of the plain tar ``url``, checked before it is read
    (:func:`_member_problem`); a bad member is a :class:`Failure` and is not read; a damaged tar is a
    Failure that ends it."""
    import webdataset as wds

    size = _archive_bytes(url)
    try:
        stream = wds.gopen(url, "rb")
    except (OSError, ValueError) as e:
        yield Failure(url, f"cannot be opened ({one_line(e)})")
        return
    try:
        tar = tarfile.open(
            fileobj=stream, mode="r|"
        )  # plain tar, read as a stream: no seek, no decompression
        for member in tar:
            problem = _member_problem(member, size)
            if problem:
                yield Failure(url, problem)
                if size is not None and member.offset_data + member.size > size:
                    return  # nothing after it can be read (a sparse member is also cut here)
                continue
            key, _, ext = member.name.partition(".")
            yield key, ext.lower(), tar.extractfile(member).read()
            tar.members = []  # a stream: keep no member list
        if size is not None and size - tar.offset < tarfile.BLOCKSIZE:  # tarfile ends quietly at a cut header
            yield Failure(url, f"truncated tar: it ends inside a member header at byte {size}")
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        yield Failure(url, f"damaged tar, the rest of the shard is lost ({one_line(e)})")
    finally:
        stream.close()


def tar_samples(url: str) -> Iterator[dict | Failure]:
    """The samples of the shard ``url``: ``{"__key__": key, ext: bytes, ...}`` per key, in tar order,
    or a :class:`Failure` per bad member, key or tar (a key met twice, its members apart or repeated)."""
    seen: set[str] = set()
    current: dict | None = None
    bad: str | None = None  # the key being skipped (a duplicate)
    for got in _read_tar(url):
        if isinstance(got, Failure):
            yield got
            continue
        key, ext, data = got
        if key == bad:
            continue
        if current is not None and key != current["__key__"]:
            yield current
            current = None
        if current is None:
            if key in seen:
                bad = key
                yield Failure(f"{url}/{key}", "key appears twice in the shard (index.json counts it once)")
                continue
            seen.add(key)
            bad, current = None, {"__key__": key}
        if ext in current:
            bad, current = key, None
            yield Failure(f"{url}/{key}", f"member {short(key + '.' + ext)} appears twice in the shard")
            continue
        current[ext] = data
    if current is not None:
        yield current


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """``[frames, channels]`` float32 and the rate of an audio file's bytes; at most
    :data:`MAX_MEMBER_SAMPLES` samples, and a header promising more than the bytes can hold is
    read block by block (memory follows what decodes). Raises ValueError with a clean reason."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            declared = f.frames * f.channels
            if declared > MAX_MEMBER_SAMPLES:
                raise ValueError(f"declares {declared} samples, over the limit of {MAX_MEMBER_SAMPLES}")
            if declared <= MAX_EXPANSION * (len(data) + (1 << 20)):
                audio = f.read(dtype="float32", always_2d=True)
            else:
                blocks = list(f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True))
                audio = np.concatenate(blocks) if blocks else np.zeros((0, f.channels), np.float32)
            rate = f.samplerate
    except sf.LibsndfileError as e:
        raise ValueError(f"not a readable audio file ({e.error_string.rstrip('.')})") from None
    except (RuntimeError, TypeError) as e:  # soundfile's own checks of a damaged header
        raise ValueError(f"not a readable audio file ({one_line(e)})") from None
    if audio.shape[0] == 0:
        raise ValueError("contains zero samples")
    if not np.isfinite(audio).all():
        raise ValueError("NaN or Inf samples")
    return audio, rate


def sample_meta(data: bytes, where: str) -> dict:
    """A sample's ``.json``: an object whose ``labels`` is a list of names, ``fold`` an integer or null and
    ``events`` (if any) a list of ``[onset, offset, label]``."""
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise DatasetError(where, f"its .json is not JSON ({one_line(e)})") from None
    if not isinstance(meta, dict):
        raise DatasetError(where, "its .json is not an object")
    labels, fold = meta.get("labels") or [], meta.get("fold")
    if not isinstance(labels, list) or not all(isinstance(n, str) for n in labels):
        raise DatasetError(where, "its .json labels are not a list of names")
    if fold is not None and (not isinstance(fold, int) or isinstance(fold, bool)):
        raise DatasetError(where, f"its .json fold {short(fold)} is not an integer")
    events = meta.get("events", [])
    if not isinstance(events, list) or not all(_is_event(e) for e in events):
        raise DatasetError(where, "its .json events are not a list of [onset, offset, label]")
    return meta


def _is_event(event) -> bool:
    """``[onset, offset, label]``: finite times, 0 <= onset <= offset, a label name."""
    if not (isinstance(event, list) and len(event) == 3 and isinstance(event[2], str)):
        return False
    a, b = event[0], event[1]
    numbers = all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in (a, b))
    return numbers and 0 <= a <= b < float("inf")


def _is_fold(key: str) -> bool:
    return key in ("None", "null") or re.fullmatch(r"-?\d{1,9}", key) is not None
