"""Front-end features of audio files written as one ``.npy`` per file (what ``sedkit features`` runs).

Audio is resampled and down-mixed to what the front end needs (fbank: 16 kHz mono; logmel: its
rate; foa/mic: 24 kHz, exactly 4 channels). The output of ``dir/name.wav`` is ``OUT/name.npy``
(:func:`sed.fileio.derived_name` shortens a name the file system would refuse), written atomically;
two inputs with the same name are an error for the second, not an overwrite.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from sed.audio.features import build_frontend
from sed.audio.io import load_audio
from sed.errors import SedError
from sed.fileio import atomic_save, derived_name

__all__ = ["extract_to_files", "frontend_for"]


def frontend_for(
    kind: str, target_length: int | None = None, sample_rate: int | None = None, n_mels: int | None = None
) -> tuple[torch.nn.Module, dict]:
    """(front end, ``load_audio`` keyword arguments) of a feature kind."""
    if kind == "fbank":
        return build_frontend("fbank", target_length=target_length), {
            "sample_rate": 16000,
            "channels": "mono",
        }
    if kind == "logmel":
        sr = sample_rate or 16000
        return build_frontend("logmel", sample_rate=sr, n_mels=n_mels or 64), {"sample_rate": sr}
    return build_frontend(kind), {"sample_rate": 24000, "num_channels": 4}


def extract_to_files(
    files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    kind: str = "fbank",
    target_length: int | None = None,
    sample_rate: int | None = None,
    n_mels: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[dict[Path, Path], list[str]]:
    """Write the features of every file; returns ``({output: input}, [one-line error per bad file])``."""
    frontend, load_kwargs = frontend_for(kind, target_length, sample_rate, n_mels)
    out = Path(out_dir)
    written: dict[Path, Path] = {}
    errors: list[str] = []
    for path in progress(files) if progress else files:
        path = Path(path)
        target = out / derived_name(path.stem, ".npy")
        try:
            if target in written:
                raise SedError(
                    path, f"output {target} already written for {written[target]}; rename one of them"
                )
            wave, _ = load_audio(path, **load_kwargs)
            with torch.inference_mode():
                feats = frontend(wave[None])[0].numpy().astype(np.float32)
            atomic_save(target, lambda tmp, feats=feats: np.save(tmp, feats))
        except SedError as e:
            errors.append(str(e))
            continue
        except OSError as e:  # the output side: a full disk, a read-only folder
            errors.append(str(SedError(path, f"cannot write {target}: {e.strerror or e}")))
            continue
        written[target] = path
    return written, errors
