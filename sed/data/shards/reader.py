"""Reading WebDataset shards written by ``sedkit shard`` (:mod:`sed.data.shards.writer`) as a stream.

:class:`ShardClips` is an ``IterableDataset`` of the same items as :class:`~sed.data.clips.ClipDataset`
(``wave``, ``length``, ``label``, ``path``; random crop for training, centre crop for evaluation,
zero padding) read sample by sample from tar shards, local or any URL ``webdataset`` opens
(``https://``, ``s3://`` through ``pipe:``). Memory holds one shard stream per worker and the
shuffle buffer, however many shards there are.

**Who reads what.** Each epoch the shard list is permuted with ``seed + epoch`` (training only; the
same permutation on every rank); rank ``r`` of ``W`` takes shards ``r, r + W, ...`` and dataloader
worker ``w`` of ``K`` takes every ``K``-th of those. Samples pass a shuffle buffer
(``shuffle_buffer``, training only).

**How many.** Evaluation reads every selected sample exactly once; on several ranks every worker
then pads to the largest worker's count with repeats flagged ``pad`` (DDP runs every forward in
lockstep, and the tasks leave padding out of their metrics). Training must give every rank the same number of
batches (DDP steps in lockstep): every worker of every rank yields exactly ``L = total // (W * K)`` samples
per epoch, from ``index.json``'s
per-shard counts. When every worker's shards hold exactly ``L`` samples (the shard count a
multiple of ``W * K`` and equal shards), each training sample is seen exactly once per epoch
across all ranks and workers. Otherwise a worker with more stops at ``L`` (the rest of its shards
wait for a later epoch, when the permutation deals them differently) and a worker with fewer
starts its shards again: at most ``max share - L`` samples per worker are left out or repeated
in an epoch, never more, and the epoch length stays ``L`` everywhere. (With fewer shards than
ranks x workers, a worker without a shard of its own reads one that another also reads.)

**Bad input.** Members are checked before they are read: a name that is not ``<key>.<ext>`` in the
tar's top folder (no folders, no ``..``, not absolute), anything but a regular file (links,
directories, sparse files), a member larger than :data:`~sed.data.shards.members.MAX_MEMBER_BYTES` (256 MiB)
or past the end of the archive is refused without reading it; audio decodes to at most
:data:`~sed.data.shards.members.MAX_MEMBER_SAMPLES` samples. A key met twice in a shard keeps its first
sample. Each failure (a bad member, key, audio,
``.json`` or label; a damaged tar ends its shard there) is one line on stderr
(``error: <shard>/<key>: reason``) and the stream goes on: in training the next sample takes its
place; in evaluation it comes as an item flagged ``pad`` with its ``error`` (no metric or
prediction row takes it; :class:`~sed.tasks.callbacks.PredictionWriter` and ``classify --shards``
count it in the exit code).
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from sed.audio.io import resample
from sed.data.clips import crop_span, pad_clip
from sed.data.shards.members import (
    MAX_INDEX_BYTES,
    Failure,
    decode_audio,
    index_problem,
    read_bounded,
    sample_meta,
    tar_samples,
)
from sed.errors import DatasetError, one_line, printable, short

__all__ = ["ShardClips", "read_index", "shard_class_counts", "shard_urls", "world"]

AUDIO_KEYS = ("flac", "wav")


def shard_urls(spec: str | os.PathLike | Sequence[str]) -> list[str]:
    """The shards of ``spec``: a folder (its ``index.json`` order), a brace pattern
    (``data/shard-{000000..000099}.tar``), a URL, or a list of these."""
    import webdataset as wds

    if isinstance(spec, (list, tuple)):
        return [u for s in spec for u in shard_urls(s)]
    p = Path(os.fspath(spec))
    if p.is_dir():
        index = read_index(p)
        return [str(p / s["name"]) for s in index["shards"]]
    return list(wds.shardlists.expand_urls(os.fspath(spec)))


def _index_location(spec: str) -> str:
    """Where the index of ``spec`` is: ``DIR/index.json``, or ``index.json`` beside the first shard
    of a pattern or URL (``https://host/a/shard-{0..9}.tar`` -> ``https://host/a/index.json``)."""
    if Path(spec).is_dir():
        return str(Path(spec) / "index.json")
    if spec.endswith(".json"):
        return spec
    first = shard_urls(spec)[0]
    head, sep, _ = first.rpartition("/")
    return f"{head}{sep}index.json" if sep else "index.json"


def read_index(spec: str | os.PathLike | Sequence[str]) -> dict[str, Any]:
    """``index.json`` of shards: in a shard folder, beside the first shard of a pattern, list or URL
    (opened with ``webdataset.gopen``: local, ``http(s)://``, ``pipe:``), or the ``.json`` named.
    An index that is not JSON, too large (:data:`MAX_INDEX_BYTES`) or not of the shape
    :mod:`sed.data.shards.writer` writes is a :class:`~sed.errors.DatasetError` naming it."""
    import webdataset as wds

    if isinstance(spec, (list, tuple)):
        spec = spec[0]
    where = _index_location(os.fspath(spec))
    try:
        with wds.gopen(where, "rb") as f:
            text = read_bounded(f, MAX_INDEX_BYTES + 1)
    except OSError:
        raise DatasetError(where, "no index.json beside the shards (write them with sedkit shard)") from None
    if len(text) > MAX_INDEX_BYTES:
        raise DatasetError(where, f"larger than {MAX_INDEX_BYTES >> 20} MiB: not a shard index")
    try:
        index = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise DatasetError(where, f"not JSON ({one_line(e)})") from None
    problem = index_problem(index)
    if problem:
        raise DatasetError(where, f"not a sed shard index ({problem})")
    return index


def shard_class_counts(
    index: dict, labels: Sequence[str], folds: Sequence[int] | None = None
) -> torch.Tensor:
    """Samples per class ``[C]`` (long) of the shards of ``index``, in ``folds`` (None: all)."""
    counts = dict.fromkeys(labels, 0)
    for entry in index["shards"]:
        for fold, per_label in entry.get("fold_labels", {}).items():
            if folds is None or _fold(fold) in set(folds):
                for name, n in per_label.items():
                    counts[name] = counts.get(name, 0) + n
    return torch.tensor([counts[n] for n in labels], dtype=torch.long)


def world() -> tuple[int, int]:
    """(rank, world size) of this process: torch.distributed when initialised, else the launcher's
    ``RANK``/``WORLD_SIZE`` (torchrun, SLURM through Lightning), else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _report(where: str, reason: str) -> None:
    print(f"error: {printable(where)}: {printable(reason)}", file=sys.stderr, flush=True)


class ShardClips(IterableDataset):
    """Clips streamed from shards (see the module docstring). ``folds`` selects samples by their
    ``fold`` (None: all); ``train`` shuffles, crops at random and equalises the epoch across ranks
    and workers; ``num_workers`` is the DataLoader's (for the epoch length)."""

    def __init__(
        self,
        shards: str | os.PathLike | Sequence[str],
        labels: Sequence[str] | None = None,
        multi_label: bool | None = None,
        sample_rate: int = 16000,
        clip_seconds: float | None = 5.0,
        train: bool = False,
        folds: Sequence[int] | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        num_workers: int = 0,
        index: dict | None = None,
    ):
        self.urls = shard_urls(shards)
        self.index = index or read_index(shards)
        entries = {s["name"]: s for s in self.index["shards"]}
        self.counts = {}
        for url in self.urls:
            entry = entries.get(url.rsplit("/", 1)[-1])
            if entry is None:
                raise DatasetError(url, "this shard is not in index.json")
            self.counts[url] = sum(
                v for k, v in entry["folds"].items() if folds is None or _fold(k) in set(folds)
            )
        self.labels = list(labels if labels is not None else self.index["labels"])
        self.multi_label = bool(self.index.get("multi_label") if multi_label is None else multi_label)
        self.sample_rate, self.train, self.folds = (
            int(sample_rate),
            bool(train),
            None if folds is None else set(folds),
        )
        self.clip_samples = None if clip_seconds is None else round(clip_seconds * sample_rate)
        self.shuffle_buffer, self.seed, self.num_workers, self.epoch = (
            int(shuffle_buffer),
            int(seed),
            int(num_workers),
            0,
        )
        self._label_index = {n: i for i, n in enumerate(self.labels)}
        #: shards left out of the deal (a resumed prediction run: their rows are written)
        self.skip: set[str] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ who reads what
    def _order(self) -> list[str]:
        urls = [u for u in self.urls if u not in self.skip]
        if self.train:
            random.Random(self.seed + self.epoch).shuffle(urls)
        return urls

    def _mine(self, rank: int, size: int, worker: int, workers: int) -> list[str]:
        return self._order()[rank::size][worker::workers]

    def per_worker(self, size: int | None = None) -> int:
        """The samples every worker of every rank yields per epoch: training ``L = total // (ranks x
        workers)``; evaluation on several ranks the largest worker's share (the others pad)."""
        size = world()[1] if size is None else size
        workers = max(1, self.num_workers)
        if self.train:
            return sum(self.counts.values()) // (size * workers)
        return max(
            sum(self.counts[u] for u in self._mine(r, size, w, workers))
            for r in range(size)
            for w in range(workers)
        )

    def __len__(self) -> int:
        """Training: the epoch length every rank shares. Evaluation has none (a ``TypeError``, so that
        Lightning reads the stream to its end): failures come as extra items, and a shard may hold
        more samples than ``index.json`` counts; :meth:`expected` is what the index promises."""
        if not self.train:
            raise TypeError("an evaluation stream of shards is read to its end (see ShardClips.expected)")
        return self.per_worker(world()[1]) * max(1, self.num_workers)

    def expected(self) -> int:
        """The items an evaluation stream yields when every shard holds what ``index.json`` counts:
        on several ranks every worker's padded share, else every selected sample not skipped."""
        rank, size = world()
        if size > 1:
            return self.per_worker(size) * max(1, self.num_workers)
        return sum(n for u, n in self.counts.items() if u not in self.skip)

    # ------------------------------------------------------------------ reading
    def _samples(self, url: str, report: bool = True) -> Iterator[dict]:
        """The items of one shard; a sample that fails is reported on stderr (once: ``report``) and
        comes as a failure item (:meth:`_failed`)."""
        for sample in tar_samples(url):
            if not isinstance(sample, Failure):
                try:
                    yield self._decode(sample, url)
                    continue
                except (DatasetError, ValueError) as e:
                    sample = Failure(
                        f"{url}/{sample['__key__']}", e.reason if isinstance(e, DatasetError) else one_line(e)
                    )
            if report:
                _report(*sample)
            yield self._failed(sample, url)

    def _failed(self, failure: Failure, url: str) -> dict:
        """An item standing for a failure: flagged ``pad`` (no metric or prediction row takes it),
        with its ``error`` and ``shard`` (a prediction writer counts it)."""
        wave = torch.zeros(self.clip_samples or 1)
        label = torch.zeros(len(self.labels)) if self.multi_label else 0
        return {
            "wave": wave,
            "length": 1,
            "label": label,
            "path": failure.where,
            "fold": None,
            "source": None,
            "pad": True,
            "error": failure.reason,
            "shard": url,
        }

    def _decode(self, sample: dict, url: str) -> dict:
        key = sample["__key__"]
        audio = next((sample[k] for k in AUDIO_KEYS if k in sample), None)
        if audio is None or "json" not in sample:
            raise DatasetError(
                f"{url}/{key}",
                f"needs .json and one of .{', .'.join(AUDIO_KEYS)} "
                f"(has {', '.join(short(k) for k in sorted(sample) if k != '__key__')})",
            )
        meta = sample_meta(sample["json"], f"{url}/{key}")
        data, sr = decode_audio(audio)
        wave = resample(torch.from_numpy(data.T.copy()).mean(dim=0), sr, self.sample_rate)
        start, stop = crop_span(wave.shape[0], self.clip_samples, self.train)
        wave, length = pad_clip(wave[start:stop], self.clip_samples)
        item = {
            "wave": wave,
            "length": length,
            "label": self._target(meta.get("labels") or [], url, key),
            "path": f"{url}/{key}",
            "fold": meta.get("fold"),
            "source": meta.get("source"),
        }
        if "events" in meta:  # strong labels, moved with the crop and cut at its edges
            t0, t1 = start / self.sample_rate, stop / self.sample_rate
            ids = self._target_ids([e[2] for e in meta["events"]], url, key)
            item["events"] = [
                (max(a, t0) - t0, min(b, t1) - t0, k)
                for (a, b, _), k in zip(meta["events"], ids)
                if b > t0 and a < t1
            ]
        return item

    def _target_ids(self, names: list[str], url: str, key: str) -> list[int]:
        unknown = [n for n in names if n not in self._label_index]
        if unknown:
            raise DatasetError(f"{url}/{key}", f"label {short(unknown[0])} is not one of the labels")
        return [self._label_index[n] for n in names]

    def _target(self, names: list[str], url: str, key: str):
        ids = self._target_ids(names, url, key)
        if self.multi_label:
            target = torch.zeros(len(self.labels))
            target[ids] = 1.0
            return target
        if len(ids) != 1:
            raise DatasetError(f"{url}/{key}", f"has {len(ids)} labels in a single-label dataset")
        return ids[0]

    def _selected(self, urls: list[str], report: bool = True) -> Iterator[dict]:
        """The items of the selected folds; failures too in evaluation (training leaves them out)."""
        for url in urls:
            for item in self._samples(url, report):
                if "error" in item:
                    if not self.train:
                        yield item
                elif self.folds is None or item["fold"] in self.folds:
                    yield item

    def _shuffled(self, items: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        buf: list[dict] = []
        for item in items:
            if len(buf) < self.shuffle_buffer:
                buf.append(item)
                continue
            i = rng.randrange(len(buf))
            buf[i], item = item, buf[i]
            yield item
        rng.shuffle(buf)
        yield from buf

    def _evaluation(self, mine: list[str], rank: int, size: int, worker: int, workers: int) -> Iterator[dict]:
        """Every selected sample once; on several ranks then padded to :meth:`per_worker` samples with
        repeats flagged ``pad`` (DDP steps in lockstep; a task leaves padding out of its metrics)."""
        n = 0
        for item in self._selected(mine):
            n += 1
            yield item
        if size == 1:
            return
        quota = self.per_worker(size)
        order = self._order()
        if not order:
            return
        pool = mine or [order[(rank * workers + worker) % len(order)]]
        while n < quota:
            before = n
            for item in self._selected(pool, report=False):  # repeats: their failures are counted once
                if n == quota:
                    return
                n += 1
                yield {k: v for k, v in item.items() if k not in ("error", "shard")} | {"pad": True}
            if n == before:
                return

    def __iter__(self) -> Iterator[dict]:
        rank, size = world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = self._mine(rank, size, worker, workers)
        if not self.train:
            yield from self._evaluation(mine, rank, size, worker, workers)
            return
        rng = random.Random((self.seed + self.epoch) * 1_000_003 + rank * 1009 + worker)
        quota = self.per_worker(size)
        order = self._order()
        if not mine and order:  # fewer shards than ranks x workers: share one
            mine = [order[(rank * workers + worker) % len(order)]]
        passes = 0
        while quota > 0 and mine:
            got = 0
            for item in self._shuffled(self._selected(mine), rng):
                yield item
                got += 1
                quota -= 1
                if quota == 0:
                    return
            passes += 1
            if got == 0 or passes > 1000:  # nothing readable in this worker's shards
                return


def _fold(key: str) -> int | None:
    return None if key in ("None", "null") else int(key)
