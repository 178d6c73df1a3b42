"""On-disk cache of front-end features (the SELD exception of the design: features of long
multichannel corpora computed once by the model's own front end, keyed by its parameters).

Layout: ``<root>/<FrontEndClass>-<hash of class and config()>/`` holds ``config.json`` (what the
hash stands for) and one ``<stem>-<path hash>-<size/mtime hash>.npy`` per audio file, float32
``[C, frames, bins]``. Changing the front end's parameters selects another folder; changing
(rewriting or touching) an audio file changes its entry name, and the stale entry is removed
when the new one is written. Entries are written atomically, so an interrupted job leaves
no partial file, and concurrent writers (DataLoader workers) at worst compute twice.

Each file is extracted whole: the log-mel ``top_db`` floor is taken over the whole file, so
time chunks would not reproduce it; the SELD front ends already process long inputs in small
frame chunks internally, and a 60-s 4-channel file needs well under 100 MB (see
``bench/bench_seld_features.py``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sed.audio.features import FeatureStandardizer
from sed.audio.io import load_audio
from sed.errors import AudioError, SedError
from sed.fileio import atomic_open, atomic_save, derived_name

__all__ = ["CACHE_VERSION", "FeatureCache", "fit_standardizer", "frontend_key"]

#: Bumped when the stored layout or the meaning of an entry changes.
CACHE_VERSION = 1


def frontend_key(frontend: nn.Module) -> dict:
    """What identifies a front end's features: its class, its ``config()`` and the cache version."""
    if not callable(getattr(frontend, "config", None)):
        raise TypeError(f"{type(frontend).__name__} has no config() describing its parameters; cannot cache")
    cls = type(frontend)
    return {
        "frontend": f"{cls.__module__}.{cls.__qualname__}",
        "config": frontend.config(),
        "version": CACHE_VERSION,
    }


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class FeatureCache:
    """Features of audio files computed by ``frontend`` and kept under ``root``.

    Audio is read with :func:`~sed.audio.io.load_audio` at the front end's ``sample_rate``,
    requiring its ``num_input_channels`` (4 for the SELD front ends) when it has those
    attributes. The front end runs without gradients on the device of its buffers."""

    def __init__(self, root: str | os.PathLike, frontend: nn.Module):
        self.root, self.frontend = Path(root), frontend
        self.key = frontend_key(frontend)
        self.dir = self.root / f"{type(frontend).__name__}-{_digest(self.key)[:16]}"
        self.sample_rate = getattr(frontend, "sample_rate", None)
        self.num_channels = getattr(frontend, "num_input_channels", None)

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.dir)!r})"

    def entry(self, path: str | os.PathLike) -> Path:
        """The cache file of ``path`` in its current state (resolved path, size, mtime)."""
        p = Path(path).resolve()
        try:
            st = p.stat()
        except FileNotFoundError:
            raise AudioError(p, "file not found") from None
        state = f"-{_digest(str(p))[:12]}-{_digest([st.st_size, st.st_mtime_ns])[:12]}.npy"
        return self.dir / derived_name(p.stem, state)  # a long stem is cut the same way for every state

    def is_cached(self, path: str | os.PathLike) -> bool:
        return self.entry(path).is_file()

    def compute(self, path: str | os.PathLike) -> torch.Tensor:
        """Features ``[C, frames, bins]`` of one file straight from the front end (no cache)."""
        wave, _ = load_audio(path, sample_rate=self.sample_rate, num_channels=self.num_channels)
        buf = next(iter(self.frontend.buffers()), None)
        with torch.no_grad():
            out = self.frontend(wave if buf is None else wave.to(buf.device))
        if out.dim() == 4 and out.shape[0] == 1:
            out = out[0]
        return out.detach().float().cpu().contiguous()

    def get(self, path: str | os.PathLike, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """Features ``[C, frames, bins]`` of ``path`` (frames ``start:stop`` when given), loaded
        from the cache or computed and stored. A bad file raises :class:`AudioError` naming it."""
        entry = self.entry(path)
        if entry.is_file():
            try:
                arr = np.load(entry, mmap_mode="r", allow_pickle=False)
                if arr.ndim == 3:
                    return torch.from_numpy(np.array(arr[:, start:stop], dtype=np.float32))
            except (OSError, ValueError, EOFError):
                pass  # unreadable entry: computed again and replaced below
        feats = self.compute(path)
        if self.entry(path) == entry:  # the file did not change while it was read
            self._store(entry, feats)
        return feats[:, start:stop].contiguous() if (start, stop) != (None, None) else feats

    def _store(self, entry: Path, feats: torch.Tensor) -> None:
        config = self.dir / "config.json"
        if not config.is_file():
            with atomic_open(config, "w") as f:
                json.dump(self.key, f, indent=1, sort_keys=True, default=str)
        atomic_save(entry, lambda tmp: np.save(tmp, feats.numpy(), allow_pickle=False))
        stale = entry.name.rsplit("-", 1)[0]  # other states of the same audio file
        for old in self.dir.glob(f"{glob.escape(stale)}-*.npy"):
            if old != entry:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()

    def warm(
        self, paths: Iterable[str | os.PathLike], progress: bool = True, num_threads: int | None = None
    ) -> list[SedError]:
        """Extract every file not cached yet (a progress bar on stderr when ``progress``).

        A bad file is reported (one line on stderr when ``progress``) and skipped; the errors,
        each naming its file, are returned. ``num_threads`` sets torch's intra-op threads for
        the extraction (restored afterwards): on a CPU shared with other busy processes, 1 is
        several times faster than oversubscribed threads (bench/bench_seld_features.py)."""
        failures: list[SedError] = []
        todo = []
        for p in paths:
            try:
                if not self.is_cached(p):
                    todo.append(p)
            except SedError as e:
                failures.append(e)
        threads = torch.get_num_threads()
        if num_threads:
            torch.set_num_threads(num_threads)
        try:
            for p in tqdm(todo, desc="features", unit="file", file=sys.stderr, disable=not progress):
                try:
                    self.get(p)
                except SedError as e:
                    failures.append(e)
                    if progress:
                        tqdm.write(f"skipped: {e}", file=sys.stderr)
        finally:
            torch.set_num_threads(threads)
        return failures


def fit_standardizer(
    cache: FeatureCache, paths: Iterable[str | os.PathLike], progress: bool = False
) -> FeatureStandardizer:
    """A :class:`FeatureStandardizer` fitted over the (cached, computed if missing) features of
    ``paths``; the baseline fits over every development file (spec 2.8)."""
    std = None
    for p in tqdm(list(paths), desc="statistics", unit="file", file=sys.stderr, disable=not progress):
        feats = cache.get(p)
        if std is None:
            std = FeatureStandardizer(feats.shape[0], feats.shape[-1])
        std.partial_fit(feats)
    if std is None:
        raise ValueError("fit_standardizer needs at least one file")
    return std
