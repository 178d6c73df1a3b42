"""Search recordings by a sentence: an index of audio embeddings, one per window of every file, and the cosine
of a query against it (what ``sedkit index`` and ``sedkit search`` run).

:func:`build_index` embeds files with a checkpoint's audio tower (a CLAP model: its projected audio
embedding, in the space of its text embeddings), each file cut into windows (default: the model's clip, 10 s
for CLAP; hop = window; a file no longer than a window is one entry, a tail shorter than a window its own
entry). :meth:`Index.search` ranks the windows by the cosine to a text (CLAP's text tower, of the index's
checkpoint) or to a vector (e.g. :meth:`Index.audio_embedding` of an example file): by default each file once,
at its best window.

An index folder holds ``meta.json`` (:data:`FORMAT`, version, the checkpoint as given -- a local path made
absolute --, model name, embedding size, window, hop, sample rate, sed version, entry count) and shards
``part-NNNNN.npz``: ``embeddings`` ``[N, D]`` L2-normalised float32, per entry ``item`` (into ``files``),
``start`` and ``end`` seconds, and ``files``, a JSON list of ``{"file", "size", "mtime_ns"}``. Every shard is
written atomically and holds its files whole, so a run stopped midway leaves whole shards and what they hold
is indexed. A rerun with the same folder skips the files indexed already (same absolute path, size and
modification time) and indexes the rest into new shards; a file changed since is indexed again and its new
shard supersedes the older rows (the latest shard that holds a file wins). Files removed since stay in the
index (an index may gather several folders, run by run).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sed.errors import DatasetError, SedError, UsageError, one_line
from sed.fileio import atomic_open, atomic_save, check_output, output_errors
from sed.inference.classifier import Classifier, FileResult
from sed.version import __version__

__all__ = ["FORMAT", "Hit", "Index", "IndexRun", "build_index"]

FORMAT, VERSION = "sed-search-index", 1
#: entries (windows) gathered before a shard is written (a file's windows all go in one shard)
SHARD_SIZE = 4096
_SHARD = re.compile(r"^part-(\d{5,})\.npz$")


@dataclass
class Hit:
    rank: int
    score: float  # cosine in [-1, 1]
    file: str
    start: float  # seconds: the window (with all_windows=False, the file's best)
    end: float


@dataclass
class IndexRun:
    """What :func:`build_index` did: files ``indexed`` now, ``skipped`` (indexed before, unchanged),
    ``errors`` (one line each), entries written now, and the index's entry count after the run."""

    out: Path
    indexed: int = 0
    skipped: int = 0
    entries: int = 0
    count: int = 0
    errors: list[str] = field(default_factory=list)


def _source(checkpoint: str | os.PathLike) -> str:
    """The checkpoint as the index records it: a local path made absolute, a short name or hub id as given."""
    return os.path.abspath(checkpoint) if os.path.exists(checkpoint) else os.fspath(checkpoint)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _json(array: np.ndarray, where: Path):
    try:
        return json.loads(str(array))
    except ValueError as err:
        raise DatasetError(where, f"is not a search index shard ({one_line(err)})") from None


def _read_shard(path: Path, dim: int | None) -> dict[str, Any]:
    """A shard's arrays, checked against each other and the index's embedding size ``dim``; a one-line
    DatasetError for anything else."""
    try:
        with np.load(path, allow_pickle=False) as z:
            part = {k: z[k] for k in ("embeddings", "item", "start", "end", "files")}
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise DatasetError(path, f"is not a search index shard ({one_line(err)})") from None
    files, n = _json(part["files"], path), len(part["item"])
    emb = part["embeddings"]
    if (
        not isinstance(files, list)
        or any(not isinstance(f, dict) or not {"file", "size", "mtime_ns"} <= set(f) for f in files)
        or emb.ndim != 2
        or emb.dtype != np.float32
        or emb.shape != (n, dim or emb.shape[1])
        or len(part["start"]) != n
        or len(part["end"]) != n
        or (n and not 0 <= int(part["item"].min()) <= int(part["item"].max()) < len(files))
    ):
        raise DatasetError(path, "is not a search index shard (its arrays do not fit together)")
    part["files"] = files
    return part


class Index:
    """A search index folder, loaded: ``embeddings`` ``[N, D]`` (unit rows), per entry ``files[item[i]]``,
    ``start[i]``, ``end[i]``; ``meta`` as in ``meta.json``; ``stats[file] = (size, mtime_ns)`` as indexed."""

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any], shards: Sequence[dict[str, Any]]):
        self.path, self.meta = Path(path), meta
        owner: dict[str, int] = {}  # file -> the latest shard holding it (it supersedes older rows)
        for s, part in enumerate(shards):
            for f in part["files"]:
                owner[f["file"]] = s
        self.files = list(owner)
        pos = {f: i for i, f in enumerate(self.files)}
        self.stats = {
            f["file"]: (f["size"], f["mtime_ns"])
            for s, p in enumerate(shards)
            for f in p["files"]
            if owner[f["file"]] == s
        }
        emb, item, start, end = [], [], [], []
        for s, part in enumerate(shards):
            names = [f["file"] for f in part["files"]]
            keep = np.array([owner[n] == s for n in names], bool)[part["item"]]  # rows not superseded
            emb.append(part["embeddings"][keep])
            item.append(np.array([pos[n] for n in names], np.int64)[part["item"][keep]])
            start.append(part["start"][keep])
            end.append(part["end"][keep])
        dim = int(meta.get("dim") or 0)
        self.embeddings = np.concatenate(emb).astype(np.float32) if emb else np.zeros((0, dim), np.float32)
        self.item = np.concatenate(item) if item else np.zeros(0, np.int64)
        self.start = np.concatenate(start).astype(float) if start else np.zeros(0)
        self.end = np.concatenate(end).astype(float) if end else np.zeros(0)
        self._text = None

    def __len__(self) -> int:
        return len(self.item)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Index:
        """The index in folder ``path``; a one-line DatasetError when it is not one."""
        path = Path(path)
        meta = _read_meta(path)
        if meta is None:
            raise DatasetError(path, "is not a search index (no meta.json; make one with sedkit index)")
        return cls(path, meta, [_read_shard(p, meta.get("dim")) for p in _shards(path)])

    # ------------------------------------------------------------------ queries
    @property
    def checkpoint(self) -> str:
        return str(self.meta["checkpoint"])

    def text_embedding(self, text: str, checkpoint: str | os.PathLike | None = None) -> np.ndarray:
        """The unit CLAP text embedding ``[D]`` of ``text`` (the index's checkpoint, or ``checkpoint``)."""
        from sed.models.zeroshot import clap_text

        source = self.checkpoint if checkpoint is None else checkpoint
        if self._text is None or self._text[0] != source:
            self._text = (source, clap_text(source))
        return self._text[1].encode([text])[0].numpy()

    def audio_embedding(
        self, file: str | os.PathLike, checkpoint: str | os.PathLike | None = None, device: str = "auto"
    ) -> np.ndarray:
        """The unit embedding ``[D]`` of an example file by the index's audio tower (or ``checkpoint``'s):
        the mean of its windows' embeddings at the index's window and hop. A bad file is an AudioError."""
        clf = Classifier.from_pretrained(
            self.checkpoint if checkpoint is None else checkpoint, device=device, need_classes=False
        )
        emb, (result,) = clf.embed([file], window=self.meta["window"], hop=self.meta["hop"])
        if result.error:
            raise SedError(None, result.error)
        return _unit(emb[0])

    def search(
        self,
        query: str | np.ndarray,
        top_k: int = 10,
        all_windows: bool = False,
        checkpoint: str | os.PathLike | None = None,
    ) -> list[Hit]:
        """The ``top_k`` best entries by cosine to ``query`` (a text, or an embedding ``[D]``): each file
        once at its best window, or with ``all_windows`` every window. Ties keep the index's order."""
        if not len(self):
            return []
        q = (
            self.text_embedding(query, checkpoint)
            if isinstance(query, str)
            else np.asarray(query, np.float32)
        )
        if q.ndim != 1 or q.shape[0] != self.embeddings.shape[1]:
            raise ValueError(
                f"the query is a {tuple(q.shape)} embedding, the index's are {self.embeddings.shape[1]}-d "
                f"({self.meta.get('model')}): use the checkpoint the index was made with"
            )
        scores = self.embeddings @ _unit(q)
        order = np.argsort(-scores, kind="stable")
        if not all_windows:  # the first (best) entry of each file
            _, first = np.unique(self.item[order], return_index=True)
            order = order[np.sort(first)]
        return [
            Hit(rank, float(scores[i]), self.files[self.item[i]], float(self.start[i]), float(self.end[i]))
            for rank, i in enumerate(order[: max(1, top_k)], 1)
        ]


def _read_meta(path: Path) -> dict[str, Any] | None:
    meta_path = path / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DatasetError(meta_path, f"cannot be read ({one_line(err)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DatasetError(meta_path, f"is not the meta.json of a search index (format {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise DatasetError(
            meta_path, f"is index format version {meta.get('version')}; this sed reads {VERSION}"
        )
    return meta


def _shards(path: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in path.iterdir() if (m := _SHARD.match(p.name))]
    return [p for _, p in sorted(found)]


def _stat(file: Path) -> tuple[str, int, int]:
    from sed.errors import AudioError

    try:
        st = os.stat(file)
    except OSError as err:
        raise AudioError(file, f"cannot be read ({err.strerror or one_line(err)})") from None
    return os.path.abspath(file), int(st.st_size), int(st.st_mtime_ns)


def _check_window(clf: Classifier, meta: dict | None, window: float | None, hop: float | None):
    """(window, hop) in seconds: the index's, else the given ones, else the model's clip; a usage error when
    they contradict the index or the model."""
    clip = (clf.max_samples or clf.clip_samples or 10 * clf.sample_rate) / clf.sample_rate
    if meta is not None:
        for name, given in (("window", window), ("hop", hop)):
            if given is not None and abs(given - meta[name]) > 1e-9:
                raise UsageError(
                    f"the index's --{name} is {meta[name]:g} s, not {given:g} s: use another --out"
                )
        return meta["window"], meta["hop"]
    window = clip if window is None else window
    if window > clip + 1e-9:
        raise UsageError(f"--window {window:g} s is longer than the model's clip ({clip:g} s)")
    return window, window if hop is None else hop


def build_index(
    files: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    checkpoint: str | os.PathLike,
    window: float | None = None,
    hop: float | None = None,
    batch_size: int = 8,
    device: str = "auto",
    precision: str = "fp32",
    shard_size: int = SHARD_SIZE,
    progress: Callable[[Iterable, int], Iterable] | None = None,
) -> IndexRun:
    """Index ``files`` (audio files, folders recursed, globs) into the folder ``out`` (made or resumed;
    see the module docstring) with ``checkpoint``'s audio tower. A file that cannot be read is one line in
    the run's ``errors`` and the rest go on; an index of another checkpoint, window or hop is a UsageError.
    ``progress(stream, total)`` wraps the stream of ``(segment, embedding)`` (segment.item: the file)."""
    from sed.audio.io import find_audio_files

    out = check_output(out, [checkpoint], kind="folder")
    meta = _read_meta(out) if out.is_dir() else None
    if meta is None and out.is_dir() and any(out.iterdir()):
        raise UsageError(f"{out} is a folder that is not a search index: give a new or empty --out")
    source = _source(checkpoint)
    if meta is not None and meta.get("checkpoint") != source:
        raise UsageError(
            f"{out} is an index of {meta.get('checkpoint')}, not of {source}: index into another --out "
            "(or rerun with its checkpoint)"
        )
    try:
        clf = Classifier.from_pretrained(checkpoint, device=device, precision=precision, need_classes=False)
    except (SedError, ValueError) as e:
        raise UsageError(e) from None
    window, hop = _check_window(clf, meta, window, hop)
    index = (
        Index(out, meta, [_read_shard(p, meta.get("dim")) for p in _shards(out)])
        if meta is not None
        else None
    )
    run = IndexRun(out, count=len(index) if index else 0)
    todo, seen = [], set()
    for f in find_audio_files(list(files)):
        try:
            name, size, mtime = _stat(f)
        except SedError as e:
            run.errors.append(str(e))
            continue
        if name in seen:
            continue
        seen.add(name)
        if index is not None and index.stats.get(name) == (size, mtime):
            run.skipped += 1
        else:
            todo.append({"file": name, "size": size, "mtime_ns": mtime})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "checkpoint": source,
        "model": clf.meta.get("model_name"),
        "dim": (meta or {}).get("dim"),
        "window": window,
        "hop": hop,
        "sample_rate": clf.sample_rate,
        "sed_version": __version__,
        "count": run.count,
    }
    with output_errors(out, any_file=True):
        out.mkdir(parents=True, exist_ok=True)
    _write_meta(out, meta)
    if todo:
        old = (
            dict(zip(index.files, np.bincount(index.item, minlength=len(index.files)).tolist()))
            if index
            else {}
        )
        _embed_into(run, out, meta, clf, todo, old, batch_size, shard_size, progress)
    return run


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    with atomic_open(out / "meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)


def _embed_into(run, out, meta, clf, todo, old, batch_size, shard_size, progress) -> None:
    """Embed the windows of ``todo``'s files and write them in shards of whole files (see build_index);
    ``old[file]``: the entries the index held of it (superseded by the new shard)."""
    results = [FileResult(t["file"]) for t in todo]
    stream = clf.embed_segments(
        [t["file"] for t in todo], results, batch_size, window=meta["window"], hop=meta["hop"]
    )
    if progress is not None:
        stream = progress(stream, len(todo))
    number = max([int(_SHARD.match(p.name).group(1)) + 1 for p in _shards(out)], default=0)
    shard: dict[str, list] = {"files": [], "rows": []}  # rows: (file in shard, start, end, embedding)
    current: list = []  # the windows of the file being embedded
    current_item = None

    def finish(item):  # the file's windows are all in: it goes into the shard unless it failed
        nonlocal current
        if item is not None and not results[item].error and current:
            k = len(shard["files"])
            shard["files"].append(todo[item])
            shard["rows"] += [(k, s, e, v) for s, e, v in current]
        current = []

    def write():
        nonlocal number
        rows = shard["rows"]
        emb = _unit(np.stack([r[3] for r in rows]))
        arrays = {
            "embeddings": emb,
            "item": np.array([r[0] for r in rows], np.int32),
            "start": np.array([r[1] for r in rows], np.float64),
            "end": np.array([r[2] for r in rows], np.float64),
            "files": np.array(json.dumps(shard["files"])),
        }
        atomic_save(out / f"part-{number:05d}.npz", lambda tmp: np.savez(tmp, **arrays))
        number += 1
        run.indexed += len(shard["files"])
        run.entries += len(rows)
        run.count += len(rows) - sum(old.get(f["file"], 0) for f in shard["files"])  # rows superseded
        meta["dim"], meta["count"] = int(emb.shape[1]), run.count
        _write_meta(out, meta)
        shard["files"], shard["rows"] = [], []

    for seg, vec in stream:
        if seg.item != current_item:
            finish(current_item)
            if len(shard["rows"]) >= shard_size:
                write()
            current_item = seg.item
        current.append((seg.start, seg.end, vec))
    finish(current_item)
    if shard["rows"]:
        write()
    run.errors += [r.error for r in results if r.error]
