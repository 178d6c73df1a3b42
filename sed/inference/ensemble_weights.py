"""The ``--weights`` of an ensemble (:mod:`sed.inference.ensemble`): numbers in the order of the
checkpoints, or the JSON file of ``sedkit ensemble-eval``, whose weights are matched by checkpoint."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sed.errors import one_line
from sed.inference.ensemble import METHODS

__all__ = ["WEIGHTS_FILE_BYTES", "ensemble_options", "read_weights_file"]


def ensemble_options(
    method: str, weights: str | Sequence[float] | None, checkpoints: Sequence[str]
) -> dict[str, Any]:
    """``weights=``/``metrics=`` for :func:`combine` from a ``--weights`` value, one per ``checkpoints``.

    ``weights`` is a list of numbers or a comma list (``"0.3,0.7"``), in the order of ``checkpoints``,
    or the JSON file written by :func:`~sed.inference.ensemble_eval.ensemble_eval`, which names the
    checkpoint of each weight: those are matched by checkpoint (the same file, or the same name for a
    hub id or short name), never by position; a checkpoint the file does not weigh, or a weight of a
    checkpoint not given, is a ValueError naming the file. ``weighted`` takes the numbers as weights
    (the file: its ``weighted`` weights); ``rank`` takes them as the members' validation metrics (the
    file: its member metrics); ``vote`` and ``average`` take none.
    """
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; choose one of {', '.join(METHODS)}")
    if weights is None:
        if method == "weighted":
            raise ValueError("--ensemble weighted needs --weights (numbers or an ensemble-eval weights file)")
        if method == "rank":
            raise ValueError(
                "--ensemble rank needs --weights (the members' validation metrics or an "
                "ensemble-eval weights file)"
            )
        return {}
    if method in ("vote", "average"):
        raise ValueError(f"--ensemble {method} takes no --weights")
    values: list[float]
    if isinstance(weights, str) and Path(weights).is_file():
        values = _weights_by_checkpoint(
            weights, "weighted" if method == "weighted" else "metrics", checkpoints
        )
    elif isinstance(weights, str):
        try:
            values = [float(x) for x in weights.replace(" ", "").split(",") if x]
        except ValueError:
            raise ValueError(
                f"--weights {weights!r}: not a file nor a comma-separated list of numbers"
            ) from None
    else:
        values = [float(x) for x in weights]
    if len(values) != len(checkpoints):
        raise ValueError(f"{len(values)} weights for {len(checkpoints)} checkpoints")
    return {"weights": values} if method == "weighted" else {"metrics": values}


#: the largest weights file read (an ensemble-eval file of a hundred members is a few kB)
WEIGHTS_FILE_BYTES = 1 << 20


def read_weights_file(path: str | os.PathLike) -> dict[str, list]:
    """``{"checkpoints": [...], "weighted": [...], "metrics": [...]}`` of an ensemble-eval weights file
    (read bounded); a file that is not one is a ValueError naming it."""
    with open(path, "rb") as f:
        raw = f.read(WEIGHTS_FILE_BYTES + 1)
    if len(raw) > WEIGHTS_FILE_BYTES:
        raise ValueError(
            f"{path}: larger than {WEIGHTS_FILE_BYTES >> 20} MiB: not a weights file of sedkit ensemble-eval"
        )
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{path}: not JSON ({one_line(e)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("weights", {}), dict):
        raise ValueError(
            f"{path}: not a weights file of sedkit ensemble-eval (a JSON object with checkpoints, "
            "weights and member_metrics)"
        )
    names = data.get("checkpoints")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: names no checkpoints (write it again with sedkit ensemble-eval --out)")
    out: dict[str, list] = {"checkpoints": names}
    for key, value in (
        ("weighted", data["weights"].get("weighted")),
        ("metrics", data.get("member_metrics")),
    ):
        what = "weighted weights" if key == "weighted" else "member metrics"
        if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            raise ValueError(f"{path}: its {what} are not numbers")
        if len(value) != len(names):
            raise ValueError(f"{path}: {len(value)} {what} for {len(names)} checkpoints")
        out[key] = [float(v) for v in value]
    return out


def _weights_by_checkpoint(path: str, key: str, checkpoints: Sequence[str]) -> list[float]:
    """The file's ``key`` values (``weighted`` or ``metrics``) of each of ``checkpoints``, matched by
    checkpoint."""
    data = read_weights_file(path)
    recorded, left = data["checkpoints"], dict(enumerate(data["checkpoints"]))
    values = []
    for given in checkpoints:
        i = next((i for i, name in left.items() if _same_checkpoint(str(given), name)), None)
        if i is None:
            raise ValueError(f"{path}: no weight for --checkpoint {given} (it weighs {', '.join(recorded)})")
        del left[i]
        values.append(data[key][i])
    if left:
        raise ValueError(
            f"{path}: weighs {next(iter(left.values()))}, which is not a --checkpoint of this run"
        )
    return values


def _same_checkpoint(a: str, b: str) -> bool:
    """Whether two checkpoint names are one checkpoint: the same file (by any path), or the same name."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # not both files (a hub id, a short name, a file since moved)
        return False
