"""Writing a corpus as WebDataset shards (``sedkit shard``): the format :mod:`sed.data.shards.reader` reads.

``DIR/shard-000000.tar``, ``shard-000001.tar``, ... are plain tar files (``tar -tf`` lists them,
``webdataset.WebDataset`` reads them alone) written with ``webdataset.TarWriter``. Per sample,
under its key (the item's index in the source, ``%08d``: the same on every run):

- ``<key>.flac`` (or ``.wav``): the clip's audio, every channel, at ``--rate`` (or the source's
  rate); a ``start``-``end`` segment is cut out. Samples keep the source's PCM_16/PCM_24 encoding
  when nothing was resampled (lossless), else PCM_24 (FLAC) or 32-bit float (WAV).
- ``<key>.json``: ``labels`` (names), ``fold``, ``source`` (the file), ``start``, ``end``
  (seconds in the source, or null), ``duration``, ``sample_rate``, ``channels``, ``events`` (strong
  labels ``[[onset, offset, label], ...]`` from the clip's start, when the source has them: JSONL
  manifests), and what the corpus adds (ICBHI: ``patient``, ``cycle``, ``split``).

``DIR/index.json``: the label list, multi-label flag, audio format and rate, per shard its name,
sample count, duration and counts per label, per fold and of labels per fold, the totals, the files that were
skipped and why, and the command. Shards are assigned deterministically (``--shard-size`` samples, or
``--shard-bytes`` of decoded 16-bit audio per shard) and written atomically (a temporary name,
renamed when complete); a re-run skips every shard whose tar already holds exactly its keys, so
an interrupted run resumes and a finished one is a no-op. A file that cannot be read is reported,
left out, and listed in the index; the shard holds the others.

**One folder, one job.** The job (format, audio, rate, ``--shard-size``/``--shard-bytes`` and a
digest of the source's items) is recorded in ``DIR/.sed-shard-job.json`` before the first shard and
in ``index.json``. A run into a folder holding shards of another job (or of no known job) is refused
before any work with one line; ``overwrite`` removes the old shards and index first. Temporaries of
killed writes are removed at the start of every run.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from sed.audio.io import info, load_audio
from sed.data.clips import ClipItem, item_labels
from sed.errors import AudioError, DatasetError, SedError, UsageError, printable
from sed.fileio import atomic_open, atomic_save, stale_temps

__all__ = ["FORMAT", "SOURCES", "ShardSource", "parse_bytes", "read_source", "shard_name", "write_shards"]

FORMAT = "sed-shards/1"
AUDIO_FORMATS = {"flac": ("FLAC", "PCM_24"), "wav": ("WAV", "FLOAT")}
_LOSSLESS = {"PCM_16", "PCM_24"}


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def parse_bytes(text: str | int) -> int:
    """``1GB``, ``500MB``, ``64KiB``, ``1000000`` -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)(i?)b?\s*", str(text).lower())
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 1GB, 500MB)")
    base = 1024 if m[3] or m[2] == "" else 1000
    return int(float(m[1]) * base ** " kmgt".index(m[2] or " "))


SOURCES = ("auto", "folder", "manifest", "esc50", "icbhi")


@dataclass
class ShardSource:
    """What to shard: items, their label names and multi-label flag, and per-item extra metadata."""

    items: list[ClipItem]
    labels: list[str]
    multi_label: bool = False
    extras: list[dict[str, Any]] = field(default_factory=list)


def _guess(path: Path) -> str:
    if path.is_file():
        return "manifest"
    if (path / "meta" / "esc50.csv").is_file():
        return "esc50"
    if any(path.glob("*.txt")) and any(path.glob("*.wav")) and not any(p.is_dir() for p in path.iterdir()):
        return "icbhi"
    return "folder"


def read_source(
    path: str | os.PathLike, source: str = "auto", labels: Sequence[str] | None = None
) -> ShardSource:
    """What a dataset source holds, as :func:`write_shards` takes it: a folder of class sub-folders,
    a CSV/JSONL manifest, an ESC-50 root or an ICBHI folder (its respiratory cycles); ``auto``
    tells them apart by their files."""
    from sed.data.corpora.esc50 import esc50_items
    from sed.data.corpora.folder import folder_items, manifest_items
    from sed.data.corpora.icbhi import icbhi_items

    p = Path(path)
    if not p.exists():
        raise DatasetError(p, "dataset source not found")
    kind = _guess(p) if source == "auto" else source
    if kind == "manifest":
        items, names, multi = manifest_items(p, labels)
        return ShardSource(items, names, multi)
    if kind == "folder":
        items, names = folder_items(p, labels)
        return ShardSource(items, names)
    if kind == "esc50":
        items, names = esc50_items(p)
        return ShardSource(items, names)
    if kind == "icbhi":
        items, names, extras = icbhi_items(p)
        return ShardSource(items, names, extras=extras)
    raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")


def _plan(
    src: ShardSource, shard_size: int | None, shard_bytes: int | None, rate: int | None
) -> list[list[int]]:
    """Shards of ``shard_size`` items, or of about ``shard_bytes`` of 16-bit audio each (from the
    headers: decoded size, not compressed). Unreadable headers are left for the writer to report."""
    if shard_bytes is None:
        size = max(1, int(shard_size or 1000))
        n = len(src.items)
        return [list(range(i, min(n, i + size))) for i in range(0, n, size)]
    shards, current, used, metas = [], [], 0, {}
    for i, it in enumerate(src.items):
        try:
            m = metas.setdefault(it.path, info(it.path))
            seconds = (it.end if it.end is not None else m.duration) - (it.start or 0.0)
            nbytes = max(0.0, seconds) * (rate or m.sample_rate) * m.channels * 2
        except SedError:
            nbytes = 0
        if current and used + nbytes > shard_bytes:
            shards.append(current)
            current, used = [], 0
        current.append(i)
        used += nbytes
    if current:
        shards.append(current)
    return shards


def _encode(item: ClipItem, rate: int | None, fmt: str) -> tuple[bytes, dict]:
    """The clip's audio file bytes and its audio fields."""
    m = info(item.path)
    wave, sr = load_audio(item.path, sample_rate=rate)
    a = 0 if item.start is None else min(round(item.start * sr), wave.shape[1])
    b = wave.shape[1] if item.end is None else min(round(item.end * sr), wave.shape[1])
    if b <= a:
        raise AudioError(item.path, f"segment {item.start}-{item.end} s holds no audio")
    container, subtype = AUDIO_FORMATS[fmt]
    if sr == m.sample_rate and m.subtype in _LOSSLESS:
        subtype = m.subtype  # the source's samples, bit for bit
    buf = io.BytesIO()
    sf.write(buf, np.ascontiguousarray(wave[:, a:b].numpy().T), sr, format=container, subtype=subtype)
    return buf.getvalue(), {"duration": (b - a) / sr, "sample_rate": sr, "channels": int(wave.shape[0])}


def _tar_keys(path: Path) -> list[str] | None:
    """The sample keys of a finished shard (None when it is not a readable tar)."""
    try:
        with tarfile.open(path) as tar:
            return sorted({n.split(".", 1)[0] for n in tar.getnames()})
    except (OSError, tarfile.TarError):
        return None


def write_shards(
    src: ShardSource,
    out: str | os.PathLike,
    *,
    shard_size: int | None = 1000,
    shard_bytes: int | str | None = None,
    fmt: str = "flac",
    rate: int | None = None,
    command: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> dict[str, Any]:
    """Write ``src`` as shards into ``out`` (see the module docstring); returns the index (also written
    to ``out/index.json``), whose ``skipped`` lists the files left out (``source``, ``error``). A folder
    holding shards of another job is refused (:class:`~sed.errors.UsageError`) unless ``overwrite``."""
    import webdataset as wds

    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"format must be one of {sorted(AUDIO_FORMATS)}, not {fmt!r}")
    if not src.items:
        raise DatasetError(None, "nothing to shard: the source lists no clips")
    out = Path(out)
    shard_bytes = None if shard_bytes is None else parse_bytes(shard_bytes)
    job = _job(src, None if shard_bytes else max(1, int(shard_size or 1000)), shard_bytes, fmt, rate)
    _claim(out, job, overwrite)
    plan = _plan(src, shard_size, shard_bytes, rate)
    extras = src.extras or [{} for _ in src.items]
    entries, skipped = [], []
    earlier = _earlier_skips(out / "index.json")
    shards = list(enumerate(plan))
    for s, members in progress(shards) if progress else shards:
        path = out / shard_name(s)
        keys = {f"{i:08d}": i for i in members}
        done = _tar_keys(path) if path.is_file() else None
        if done and set(done) <= set(keys):  # finished by an earlier run: keep it
            entries.append(_entry(path.name, _read_jsons(path)))
            for key in sorted(set(keys) - set(done)):
                it = src.items[keys[key]]
                skipped.append(
                    _skip(it, earlier.get((it.path, it.start, it.end), "left out by an earlier run"))
                )
            continue
        metas: list[dict] = []

        def write(tmp, members=members, metas=metas):  # one sample at a time: memory stays one clip
            with wds.TarWriter(tmp, encoder=False, mtime=0) as sink:
                for i in members:
                    it = src.items[i]
                    try:
                        audio, fields = _encode(it, rate, fmt)
                    except SedError as e:
                        skipped.append(_skip(it, e.reason))
                        continue
                    meta = {
                        "labels": [src.labels[k] for k in item_labels(it)],
                        "fold": it.fold,
                        "source": it.path,
                        "start": it.start,
                        "end": it.end,
                        **fields,
                        **extras[i],
                    }
                    if it.events is not None:  # strong labels: seconds from the clip's start
                        meta["events"] = [[a, b, src.labels[k]] for a, b, k in it.events]
                    sink.write({"__key__": f"{i:08d}", fmt: audio, "json": json.dumps(meta).encode()})
                    metas.append(meta)

        atomic_save(path, write)
        if metas:
            entries.append(_entry(path.name, metas))
        else:  # every file of the shard failed
            path.unlink()
    index = {**_index(src, entries, skipped, fmt, rate, command), "job": job}
    with atomic_open(out / "index.json") as f:
        json.dump(index, f, indent=1)
    return index


JOB_FILE = ".sed-shard-job.json"  # the job a folder's shards belong to, written before the first shard


def _job(
    src: ShardSource, shard_size: int | None, shard_bytes: int | None, fmt: str, rate: int | None
) -> dict:
    """What decides every byte of the shards: the format, audio, rate, the plan's size and the source's
    items (a digest of their files, segments, labels, folds and extras)."""
    import hashlib

    items = [
        [it.path, it.start, it.end, item_labels(it), it.fold]
        + ([] if it.events is None else [list(it.events)])
        for it in src.items
    ]
    digest = hashlib.sha256(
        json.dumps([items, src.labels, src.multi_label, src.extras], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    return {
        "format": FORMAT,
        "audio": fmt,
        "sample_rate": rate,
        "shard_size": shard_size,
        "shard_bytes": shard_bytes,
        "source": digest,
    }


def _earlier_job(out: Path) -> dict | str | None:
    """The job of the shards already in ``out`` (None: there are none; a string: they are of no known job)."""
    for where in (out / JOB_FILE, out / "index.json"):
        if where.is_file():
            try:
                text = json.loads(where.read_text())
            except (OSError, ValueError, UnicodeDecodeError):
                return f"{where.name} is unreadable"
            job = text.get("job", text) if isinstance(text, dict) and where.name == "index.json" else text
            return job if isinstance(job, dict) and "source" in job else f"{where.name} names no job"
    return "shards of an unknown job" if any(out.glob("shard-*.tar")) else None


def _claim(out: Path, job: dict, overwrite: bool) -> None:
    """Make ``out`` the folder of ``job``: sweep the temporaries of killed writes; refuse (or with
    ``overwrite`` remove) shards of another job; record the job before the first shard."""
    out.mkdir(parents=True, exist_ok=True)
    for tmp in stale_temps(out, ".tar") + stale_temps(out, ".tmp") + stale_temps(out, ".json"):
        tmp.unlink(missing_ok=True)
    earlier = _earlier_job(out)
    if earlier is not None and earlier != job:
        if not overwrite:
            why = (
                earlier
                if isinstance(earlier, str)
                else "another "
                + ", ".join(
                    f"{k} ({earlier.get(k)} there, {v} now)" for k, v in job.items() if earlier.get(k) != v
                )
            )
            raise UsageError(
                f"{printable(str(out))}: holds shards of another job: {why}; use an empty folder, "
                f"or --overwrite to replace them"
            )
        for old in [*out.glob("shard-*.tar"), out / "index.json", out / JOB_FILE]:
            old.unlink(missing_ok=True)
    with atomic_open(out / JOB_FILE) as f:
        json.dump(job, f)


def _earlier_skips(index: Path) -> dict:
    """(source, start, end) -> reason, of the files an earlier run's index lists as skipped."""
    try:
        return {
            (e["source"], e["start"], e["end"]): e["error"] for e in json.loads(index.read_text())["skipped"]
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _read_jsons(path: Path) -> list[dict]:
    with tarfile.open(path) as tar:
        return [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]


def _skip(item: ClipItem, reason: str) -> dict:
    return {"source": item.path, "start": item.start, "end": item.end, "error": reason}


def _entry(name: str, metas: list[dict]) -> dict:
    """A shard's line in the index: counts per label, per fold, and of labels per fold."""
    per_fold: dict[str, Counter] = {}
    for m in metas:
        per_fold.setdefault(str(m["fold"]), Counter()).update(m["labels"])
    return {
        "name": name,
        "count": len(metas),
        "duration": round(sum(m["duration"] for m in metas), 6),
        "labels": dict(Counter(n for m in metas for n in m["labels"])),
        "folds": {str(k): v for k, v in Counter(m["fold"] for m in metas).items()},
        "fold_labels": {k: dict(v) for k, v in per_fold.items()},
    }


def _index(
    src: ShardSource,
    entries: list[dict],
    skipped: list[dict],
    fmt: str,
    rate: int | None,
    command: Sequence[str] | None,
) -> dict:
    labels, folds = Counter(), Counter()
    for e in entries:
        labels.update(e["labels"])
        folds.update(e["folds"])
    return {
        "format": FORMAT,
        "audio": fmt,
        "sample_rate": rate,
        "labels": list(src.labels),
        "multi_label": bool(src.multi_label),
        "shards": entries,
        "count": sum(e["count"] for e in entries),
        "duration": round(sum(e["duration"] for e in entries), 6),
        "label_counts": {n: labels.get(n, 0) for n in src.labels},
        "fold_counts": dict(folds),
        "skipped": skipped,
        "command": list(command if command is not None else sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
