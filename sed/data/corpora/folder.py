"""Generic labelled corpora: a folder per class, or a manifest (CSV or JSONL) of files and labels.

- Folder: ``<root>/<class>/**/<file>.wav``; label names are the sorted sub-folder names (or the
  ``labels`` given), audio files are found recursively inside each class folder.
- Manifest CSV (``.csv``, or ``.tsv`` tab-separated): a header with the columns
  ``path,label[,start,end,fold]`` (other columns are ignored); several labels as ``a;b``.
- Manifest JSONL (``.jsonl``/``.ndjson``): one object per line,
  ``{"path": ..., "label": "a" | ["a", "b"], "start": s, "end": s, "fold": k}``; strong labels as
  ``"events": [[onset, offset, "a"], ...]`` (seconds from the clip's start; ``label`` may then be left
  out: the events' classes).

Relative paths are resolved against the manifest's folder (or ``base``). A manifest is
multi-label when any row has several labels or (JSONL) a list of labels. Malformed rows
raise DatasetError naming the manifest and the line.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

from sed.audio.io import AUDIO_EXTENSIONS
from sed.data.clips import ClipDataset, ClipItem
from sed.data.corpora.text import csv_errors, text_lines
from sed.errors import DatasetError, short

__all__ = ["FolderDataset", "ManifestDataset", "folder_items", "manifest_items"]

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def _check_labels(labels: Sequence[str] | None) -> list[str] | None:
    if labels is None:
        return None
    labels = [str(x) for x in labels]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup or not labels:
        raise ValueError(f"labels must be a non-empty list of distinct names (repeated: {dup})")
    return labels


def folder_items(
    root: str | os.PathLike, labels: Sequence[str] | None = None, extensions: Sequence[str] = AUDIO_EXTENSIONS
) -> tuple[list[ClipItem], list[str]]:
    """Items of a folder-per-class corpus and its label names.

    With ``labels`` every class folder must be one of them (classes without a folder are
    allowed); without, every non-hidden sub-folder is a class and must hold audio."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "dataset folder not found")
    labels = _check_labels(labels)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if loose:
        raise DatasetError(
            root,
            f"{len(loose)} audio file(s) lie outside the class sub-folders "
            f"(e.g. {loose[0]}); put each file in the folder of its class",
        )
    if not folders:
        raise DatasetError(root, "no class sub-folders (expected <root>/<class>/<file>.wav)")
    names = labels or [p.name for p in folders]
    index = {name: k for k, name in enumerate(names)}
    items: list[ClipItem] = []
    for folder in folders:
        if folder.name not in index:
            raise DatasetError(folder, f"class folder {folder.name!r} is not one of the labels {names}")
        files = sorted(
            f
            for f in folder.rglob("*")
            if f.is_file()
            and f.suffix.lower() in extensions
            and not any(part.startswith(".") for part in f.relative_to(folder).parts)
        )
        if not files and labels is None:
            raise DatasetError(folder, "class folder holds no audio files")
        items.extend(ClipItem(str(f), index[folder.name]) for f in files)
    if not items:
        raise DatasetError(root, "no audio files in the class sub-folders")
    return items, names


class FolderDataset(ClipDataset):
    """A :class:`ClipDataset` over :func:`folder_items` (single-label)."""

    def __init__(self, root: str | os.PathLike, labels: Sequence[str] | None = None, **kwargs):
        items, names = folder_items(root, labels)
        super().__init__(items, names, multi_label=kwargs.pop("multi_label", False), **kwargs)


# ---------------------------------------------------------------------- manifests


def _time(value, name: str, where: str, manifest: Path) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        t = float(value)
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(manifest, f"{where}: {name} {short(value)} is not a number of seconds") from None
    if not t >= 0 or t == float("inf"):
        raise DatasetError(manifest, f"{where}: {name} must be a finite time >= 0, got {short(value)}")
    return t


def _fold(value, where: str, manifest: Path) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            raise TypeError
        return int(value)
    except (TypeError, ValueError):
        raise DatasetError(manifest, f"{where}: fold {short(value)} is not an integer") from None


def _row(manifest: Path, base: Path, where: str, path, label, start, end, fold) -> tuple:
    """(path, label names, start, end, fold) of one row, checked."""
    if not isinstance(path, str) or not path.strip():
        raise DatasetError(manifest, f"{where}: missing path")
    if isinstance(label, str):
        names = [s.strip() for s in label.split(";")] if label.strip() else []
    elif isinstance(label, list) and all(
        isinstance(x, (str, int)) and not isinstance(x, bool) for x in label
    ):
        names = [str(x).strip() for x in label]
    elif isinstance(label, int) and not isinstance(label, bool):
        names = [str(label)]
    else:
        raise DatasetError(manifest, f"{where}: label must be a name or a list of names, got {short(label)}")
    if (not names and not isinstance(label, list)) or any(not n for n in names):
        raise DatasetError(manifest, f"{where}: empty label")
    start, end = _time(start, "start", where, manifest), _time(end, "end", where, manifest)
    if start is not None and end is not None and end <= start:
        raise DatasetError(manifest, f"{where}: end ({end}) must be after start ({start})")
    fold = _fold(fold, where, manifest)
    p = Path(os.path.expanduser(path.strip()))
    return str(p if p.is_absolute() else base / p), names, start, end, fold


def _read_csv(manifest: Path, base: Path, delimiter: str) -> list[tuple]:
    rows = []
    reader = csv.reader(text_lines(manifest), delimiter=delimiter)
    lines = csv_errors(reader, manifest)
    header = [h.strip() for h in next(lines, [])]
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise DatasetError(
            manifest,
            f"line 1: header lacks column(s) {', '.join(missing)} "
            f"(expected path,label[,start,end,fold]; got {short(','.join(header))})",
        )
    repeated = sorted({h for h in header if h and header.count(h) > 1})
    if repeated:
        raise DatasetError(
            manifest, f"line 1: column(s) {', '.join(map(short, repeated))} appear more than once"
        )
    for cells in lines:
        where = f"line {reader.line_num}"
        if not cells:
            continue
        if len(cells) > len(header):
            raise DatasetError(manifest, f"{where}: more fields than header columns")
        raw = dict(zip(header, cells))
        rows.append(
            (
                where,
                _row(
                    manifest,
                    base,
                    where,
                    raw.get("path"),
                    raw.get("label") or "",
                    raw.get("start"),
                    raw.get("end"),
                    raw.get("fold"),
                ),
                False,
                None,
            )
        )
    return rows


def _events(value, where: str, manifest: Path) -> list[tuple[float, float, str]] | None:
    """A JSONL row's ``events``: ``[[onset, offset, label], ...]``, times finite and >= 0, onset <= offset."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise DatasetError(manifest, f"{where}: events must be a list of [onset, offset, label]")
    out = []
    for ev in value:
        if not (isinstance(ev, list) and len(ev) == 3 and isinstance(ev[2], str) and ev[2].strip()):
            raise DatasetError(manifest, f"{where}: event {short(ev)} is not [onset, offset, label]")
        onset, offset = _time(ev[0], "onset", where, manifest), _time(ev[1], "offset", where, manifest)
        if onset is None or offset is None or onset > offset:
            raise DatasetError(manifest, f"{where}: event {short(ev)} needs onset <= offset")
        out.append((onset, offset, ev[2].strip()))
    return sorted(out)


def _read_jsonl(manifest: Path, base: Path) -> list[tuple]:
    rows = []
    for lineno, line in enumerate(text_lines(manifest), start=1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(manifest, f"{where}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise DatasetError(manifest, f"{where}: JSON nested too deeply") from None
        if not isinstance(obj, dict) or ("label" not in obj and "events" not in obj):
            raise DatasetError(manifest, f'{where}: expected an object with "path" and "label" (or "events")')
        events = _events(obj.get("events"), where, manifest)
        if "label" not in obj:
            obj["label"] = sorted({e[2] for e in events})
        rows.append(
            (
                where,
                _row(
                    manifest,
                    base,
                    where,
                    obj.get("path"),
                    obj["label"],
                    obj.get("start"),
                    obj.get("end"),
                    obj.get("fold"),
                ),
                isinstance(obj["label"], list),
                events,
            )
        )
    return rows


def manifest_items(
    manifest: str | os.PathLike, labels: Sequence[str] | None = None, base: str | os.PathLike | None = None
) -> tuple[list[ClipItem], list[str], bool]:
    """(items, label names, multi_label) of a CSV or JSONL manifest (see the module docstring).

    Label names are ``labels`` (every row's labels must be among them) or the sorted unique
    labels of the manifest. Items carry an int label, or lists of ints when multi-label."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DatasetError(manifest, "manifest not found")
    labels = _check_labels(labels)
    base = Path(base) if base is not None else manifest.parent
    suffix = manifest.suffix.lower()
    if suffix in CSV_SUFFIXES:
        rows = _read_csv(manifest, base, CSV_SUFFIXES[suffix])
    elif suffix in JSONL_SUFFIXES:
        rows = _read_jsonl(manifest, base)
    else:
        raise DatasetError(
            manifest, f"unknown manifest format {suffix or '(no suffix)'} (use .csv, .tsv, .jsonl or .ndjson)"
        )
    if not rows:
        raise DatasetError(manifest, "manifest lists no files")
    multi = any(len(parsed[1]) != 1 or is_list for _, parsed, is_list, _ in rows)
    names = labels or sorted({n for r in rows for n in r[1][1] + [e[2] for e in r[3] or []]})
    if not names:
        raise DatasetError(manifest, "no row has a label: the manifest names no classes")
    index = {n: k for k, n in enumerate(names)}
    folds = [r[1][4] is not None for r in rows]
    if any(folds) and not all(folds):
        where = rows[folds.index(False)][0]
        raise DatasetError(
            manifest, f"{where}: no fold, but other rows have one (give every row a fold or none)"
        )
    items = []
    for where, (path, row_labels, start, end, fold), _, events in rows:
        unknown = [n for n in row_labels + [e[2] for e in events or []] if n not in index]
        if unknown:
            raise DatasetError(manifest, f"{where}: label {unknown[0]!r} is not one of the labels {names}")
        ids = [index[n] for n in row_labels]
        strong = None if events is None else tuple((a, b, index[n]) for a, b, n in events)
        items.append(ClipItem(path, ids if multi else ids[0], start, end, fold, strong))
    return items, names, multi


class ManifestDataset(ClipDataset):
    """A :class:`ClipDataset` over :func:`manifest_items`; ``multi_label`` None = from the manifest."""

    def __init__(
        self,
        manifest: str | os.PathLike,
        labels: Sequence[str] | None = None,
        multi_label: bool | None = None,
        base: str | os.PathLike | None = None,
        **kwargs,
    ):
        items, names, multi = manifest_items(manifest, labels, base)
        super().__init__(items, names, multi_label=multi if multi_label is None else multi_label, **kwargs)
