"""The DCASE 2024 Task 4 baseline's released checkpoints (DESED_task, ``recipes/dcase2024_task4_baseline``;
``baseline_pretrained_2024.zip`` on Zenodo record 11280943) onto :class:`~sed.models.crnn.CRNNModel`.

A release ``.ckpt`` is a PyTorch Lightning checkpoint of the recipe's ``SEDTask4``: ``state_dict`` holds
``sed_student.*`` and ``sed_teacher.*`` (two CRNNs: ``cnn.cnn.conv{i}`` / ``batchnorm{i}`` /
``glu{i}.linear``, ``rnn.rnn.*``, ``dense``, ``dense_softmax``, ``cat_tf``) and the front end's ``mel_spec.*``
buffers (dropped: sed's front end makes the same window and filter bank from its parameters);
``hyper_parameters`` holds the recipe's config (``net``, ``feats``), read for the pooling and the mel bins
where present. The recipe reports the teacher
(``test/teacher/psds1/sed_scores_eval`` is its result), so the teacher is loaded; ``branch="student"``
loads the student. A bare CRNN state dict (the checkpoint's ``sed_student`` entry) is taken as well.

The released weights were trained with the reference's attention softmax over classes, so the model is
built with ``attention_over_classes=True`` (see :mod:`sed.models.crnn`). They never include BEATs (the
recipe reads precomputed embeddings): a checkpoint trained with 768-d embeddings needs
``embeddings="beats_iter3", embeddings_pretrained=<BEATs_iter3_plus_AS2M.pt>`` (or precomputed embeddings
passed to ``frames_from_features``); the BEATs weights then come from there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from sed.errors import CheckpointError
from sed.models.crnn import DCASE2024_LABELS
from sed.models.pretrained.build import Arch, Importer, sed_arch
from sed.models.pretrained.sources import Contents

__all__ = ["IMPORTER", "BRANCHES", "from_reference"]

BRANCHES = ("teacher", "student")
_MARK = "\x00"  # separates the branch from the key in the mapped state until adapt picks one
_RULES = (
    (re.compile(r"cnn\.cnn\.conv(\d+)\.(.+)$"), r"blocks.\1.0.\2"),
    (re.compile(r"cnn\.cnn\.batchnorm(\d+)\.(.+)$"), r"blocks.\1.1.\2"),
    (re.compile(r"cnn\.cnn\.glu(\d+)\.linear\.(.+)$"), r"blocks.\1.2.linear.\2"),
    (re.compile(r"rnn\.rnn\.(.+)$"), r"rnn.\1"),
    (re.compile(r"dense\.(weight|bias)$"), r"head.dense.\1"),
    (re.compile(r"dense_softmax\.(weight|bias)$"), r"head.attention.\1"),
    (re.compile(r"cat_tf\.(weight|bias)$"), r"project.\1"),
)


def _branches(state: Mapping) -> dict[str, Mapping]:
    """``{"teacher": ..., "student": ...}`` CRNN state dicts of a release checkpoint or a bare one."""
    inner = state.get("state_dict") if isinstance(state.get("state_dict"), Mapping) else state
    out = {}
    for branch in BRANCHES:
        prefix = f"sed_{branch}."
        found = {k[len(prefix) :]: v for k, v in inner.items() if str(k).startswith(prefix)}
        if found:
            out[branch] = found
    if not out and "cnn.cnn.conv0.weight" in inner:
        out["student"] = dict(inner)
    return out


def claims(contents: Contents) -> bool:
    return any(
        "cnn.cnn.conv0.weight" in b and "rnn.rnn.weight_ih_l0" in b
        for b in _branches(contents.state).values()
    )


def from_reference(state: Mapping) -> tuple[dict[str, torch.Tensor], list[str]]:
    """One reference CRNN's tensors -> (sed-named tensors, the keys kept as they are: no place in sed)."""
    out, extra = {}, []
    for k, v in state.items():
        for pattern, repl in _RULES:
            if pattern.match(str(k)):
                out[pattern.sub(repl, str(k))] = v
                break
        else:
            out[str(k)], _ = v, extra.append(str(k))
    return out, extra


def map_keys(contents: Contents) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Both branches, each under its name (``adapt`` keeps the one asked for); the front end's buffers and
    the training state are dropped."""
    state = {}
    for branch, tensors in _branches(contents.state).items():
        mapped, _ = from_reference(tensors)
        state.update({f"{branch}{_MARK}{k}": v for k, v in mapped.items() if isinstance(v, torch.Tensor)})
    inner = contents.state.get("state_dict", {})
    dropped = [str(k) for k in inner if not str(k).startswith(("sed_student.", "sed_teacher."))]
    return state, dropped


def _net(contents: Contents) -> dict:
    hp = contents.state.get("hyper_parameters")
    return dict(hp.get("net") or {}) if isinstance(hp, Mapping) else {}


def arch_from(contents: Contents, state: dict[str, torch.Tensor]) -> Arch:
    if contents.sed is not None:
        return sed_arch(contents)
    branch = next(b for b in BRANCHES if any(k.startswith(b + _MARK) for k in state))
    t = {k.split(_MARK, 1)[1]: v for k, v in state.items() if k.startswith(branch + _MARK)}
    filters, i = [], 0
    while f"blocks.{i}.0.weight" in t:
        filters.append(int(t[f"blocks.{i}.0.weight"].shape[0]))
        i += 1
    if "rnn.weight_hh_l0" not in t or "head.dense.bias" not in t or not filters:
        raise CheckpointError(contents.desc, "does not fit the CRNN: missing conv, GRU or dense tensors")
    net, hp = _net(contents), contents.state.get("hyper_parameters") or {}
    feats = dict(hp.get("feats") or {}) if isinstance(hp, Mapping) else {}
    kwargs = {
        "filters": filters,
        "kernel_size": int(t["blocks.0.0.weight"].shape[-1]),
        "rnn_hidden": int(t["rnn.weight_hh_l0"].shape[1]),
        "rnn_layers": sum(1 for k in t if re.fullmatch(r"rnn\.weight_ih_l\d+", k)),
        "attention_over_classes": True,
    }
    if "pooling" in net:
        kwargs["pooling"] = [[int(p) for p in pool] for pool in net["pooling"]]
    for ours, theirs in (("n_mels", "n_mels"), ("n_fft", "n_window"), ("hop_length", "hop_length")):
        if theirs in feats:
            kwargs[ours] = int(feats[theirs])
    if "project.weight" in t:
        kwargs["embedding_dim"] = int(t["project.weight"].shape[1] - t["project.weight"].shape[0])
    n = int(t["head.dense.bias"].shape[0])
    labels = list(DCASE2024_LABELS) if n == len(DCASE2024_LABELS) else None
    return Arch("crnn_dcase2024", kwargs, n, labels, True, kind=f"dcase2024 baseline ({branch})")


def adapt(state: dict[str, torch.Tensor], model, arch: Arch, branch: str = "teacher") -> list[str]:
    """Keep ``branch``'s tensors (the teacher when the file has one, else what it has), the model's own
    front-end buffers and BEATs weights (a release file has no BEATs)."""
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {', '.join(BRANCHES)}, got {branch!r}")
    have = {k.split(_MARK, 1)[0] for k in state if _MARK in k}
    if not have:
        return []
    pick = branch if branch in have else next(iter(have))
    kept = {k.split(_MARK, 1)[1]: v for k, v in state.items() if k.startswith(pick + _MARK)}
    state.clear()
    state.update(kept)
    state.update({f"frontend.{k}": v for k, v in model.frontend.state_dict().items()})
    if getattr(model, "beats", None) is not None:
        state.update({f"beats.{k}": v for k, v in model.beats.state_dict().items()})
    return [f"the {pick}", "attention softmax over classes (the reference's)"]


IMPORTER = Importer(
    "crnn",
    "CRNN",
    "a DCASE 2024 Task 4 baseline checkpoint (state_dict with sed_student.* / sed_teacher.* CRNNs)",
    claims,
    arch_from,
    map_keys,
    head="head.",
    head_what="dense and attention Linears; ",
    adapt=adapt,
    options=("branch",),
    audioset=False,
)
