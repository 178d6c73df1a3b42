"""Ensemble evaluation on a data split (what ``sedkit ensemble-eval`` runs).

:func:`ensemble_eval` scores every member on a split of a data module (the split's own eval crop,
batched through the data module's loader), reports each member's accuracy and macro F1 (mAP and
macro F1 for multi-label data) and every method's, and writes the members' metrics and the
``weighted`` (proportional to the metric) and ``rank`` weights as JSON, with the checkpoint of each
(``classify --weights`` matches weights to checkpoints by them, not by position). The weights are chosen and
scored on the same split, so the ``weighted``/``rank`` rows are optimistic; choose them on
validation and report on a separate test split (``split="test"`` with the weights file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sed.fileio import atomic_open
from sed.inference.device import resolve_device
from sed.inference.ensemble import METHODS, check_members, combine, weights_from_metrics
from sed.models.loading import load_model
from sed.training.lightning_cli import datamodule_of

__all__ = ["ensemble_eval"]


def _member_scores(model: torch.nn.Module, loader, multi: bool, device: torch.device) -> np.ndarray:
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for batch in loader:
            logits = model(batch["wave"].to(device), lengths=batch["lengths"].to(device)).float()
            out.append((torch.sigmoid(logits) if multi else torch.softmax(logits, -1)).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _metrics(scores: np.ndarray, y: np.ndarray, multi: bool) -> dict[str, float]:
    from torchmetrics.functional import classification as F

    s, t = torch.as_tensor(scores, dtype=torch.float32), torch.as_tensor(y)
    c = scores.shape[1]
    if multi:
        t = t.long()
        return {
            "map": float(F.multilabel_average_precision(s, t, c, average="macro")),
            "f1": float(F.multilabel_f1_score(s, t, c, average="macro")),
        }
    pred = s.argmax(-1)
    return {
        "acc": float((pred == t).float().mean()),
        "f1": float(F.multiclass_f1_score(pred, t.long(), c, average="macro")),
    }


def ensemble_eval(
    checkpoints: Sequence[str],
    data_config: str | os.PathLike,
    split: str = "val",
    out: str | os.PathLike | None = None,
    device: str = "auto",
    methods: Sequence[str] = METHODS,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Score every member and every ensemble method on ``split`` (``val`` or ``test``) of the data module of
    ``data_config`` and ``overrides`` (``--data.init_args.x=y``), read as ``sedkit fit`` reads them
    (:func:`~sed.training.lightning_cli.datamodule_of`).

    Returns ``{"split", "metric", "labels", "checkpoints" (files as absolute paths: ``classify --weights``
    matches each weight to its checkpoint by them), "members": [{"checkpoint", <metric>, "f1"}],
    "member_metrics", "weights": {"weighted": [...], "rank": [...]}, "methods": [{"method", <metric>,
    "f1"}]}``
    (metric ``acc`` for single-label data, ``map`` for multi-label) and writes it as JSON to ``out``.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    dm = datamodule_of(data_config, overrides)
    labels, multi = list(dm.label_names), bool(dm.is_multi_label)
    rate = int(getattr(dm.hparams, "sample_rate", 0) or 0) if hasattr(dm, "hparams") else 0
    members = []
    for path in checkpoints:
        model, meta = load_model(path, kind="clip")
        mlabels = list(meta.get("labels") or [])
        if mlabels != labels:
            raise ValueError(f"{path}: labels {mlabels} differ from the data's labels {labels}")
        if rate and meta.get("sample_rate") and int(meta["sample_rate"]) != rate:
            raise ValueError(
                f"{path}: the model takes {meta['sample_rate']} Hz audio, the data is served at {rate} Hz"
            )
        members.append(model)
    check_members([labels] * len(members), [multi] * len(members), list(map(str, checkpoints)))
    dm.setup("validate" if split == "val" else "test")
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    y = np.concatenate([np.asarray(b["label"]) for b in loader])
    dev = resolve_device(device)
    scores = [_member_scores(m, loader, multi, dev) for m in members]
    key = "map" if multi else "acc"
    member_rows = [{"checkpoint": str(p), **_metrics(s, y, multi)} for p, s in zip(checkpoints, scores)]
    member_metrics = [r[key] for r in member_rows]
    weights = {
        "weighted": weights_from_metrics(member_metrics, "proportional").tolist()
        if sum(member_metrics) > 0
        else [1.0 / len(members)] * len(members),
        "rank": weights_from_metrics(member_metrics, "rank").tolist(),
    }
    method_rows = []
    for method in methods:
        kw = (
            {"weights": weights["weighted"]}
            if method == "weighted"
            else {"metrics": member_metrics}
            if method == "rank"
            else {}
        )
        combined = combine(scores, method, multi_label=multi, **kw)
        method_rows.append(
            {
                "method": method,
                **_metrics(combined, y, multi),
                **({"weights": weights[method]} if method in weights else {}),
            }
        )
    table = {
        "split": split,
        "metric": key,
        "labels": labels,
        "checkpoints": [_where(p) for p in checkpoints],
        "members": member_rows,
        "member_metrics": member_metrics,
        "weights": weights,
        "methods": method_rows,
        "clips": int(len(y)),
    }
    if out is not None:
        with atomic_open(out, "w") as f:
            json.dump(table, f, indent=2)
    return table


def _where(checkpoint: str | os.PathLike) -> str:
    """How the weights file names a member: a file by its absolute path (so that ``classify --weights``
    matches it from any folder), a hub id or short name as given."""
    return os.path.abspath(checkpoint) if os.path.isfile(checkpoint) else str(checkpoint)
