"""Kill safety: ``sedkit fit`` on the demo recipe SIGKILLed at several moments (two of them in the middle
of a checkpoint write, the rest at random times) leaves only checkpoints that load, ``--ckpt_path
last`` resumes and finishes, and the result equals an uninterrupted run bit for bit;
``sedkit classify --output F`` killed at any moment leaves F absent or complete.

The processes run ``sedkit`` with a small hook (:data:`HOOK`) that can stall the N-th checkpoint
write half-way through its temporary file, the N-th ``fsync`` of an output, the N-th optimizer step
or the N-th audio file read, and say so on stderr: the test reads that line from the process's stderr
and kills it there. No kill waits for a time, so no result depends on the machine's speed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sed.data.synth.corpora import make_esc50
from sed.models.loading import load_model
from sed.training.demo import RECIPE

ROOT = Path(__file__).resolve().parents[2]
MARK = "SED-TEST-STALLED"
HOOK = f"""
import io, os, sys, time
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
kind, _, at = os.environ.get("SED_TEST_STALL", ":0").partition(":")
count = {{"save": 0, "fsync": 0, "step": 0, "read": 0}}
_save, _fsync = torch.save, os.fsync
import soundfile
_read = soundfile.read

def stall(what):
    print("{MARK}", what, file=sys.stderr, flush=True)
    time.sleep(600)

def save(obj, f, *args, **kwargs):
    if kind != "save" or not isinstance(f, (str, os.PathLike)):
        return _save(obj, f, *args, **kwargs)
    count["save"] += 1
    if count["save"] != int(at):
        return _save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    _save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    with open(f, "wb") as out:
        out.write(data[: len(data) // 2])
        out.flush()
        stall(f)

def fsync(fd):
    count["fsync"] += 1
    if kind == "fsync" and count["fsync"] == int(at):
        stall(fd)
    return _fsync(fd)

def after_step(optimizer, args, kwargs):
    count["step"] += 1
    if kind == "step" and count["step"] == int(at):
        stall("optimizer step")

def read(*args, **kwargs):
    count["read"] += 1
    if kind == "read" and count["read"] == int(at):
        stall("audio read")
    return _read(*args, **kwargs)

torch.save, os.fsync, soundfile.read = save, fsync, read
register_optimizer_step_post_hook(after_step)
from sed.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def sedkit(args, log: Path, stall: str = ":0") -> subprocess.Popen:
    env = {**os.environ, "SED_TEST_STALL": stall, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", HOOK, *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
        stdin=subprocess.DEVNULL,
    )


def kill_at_stall(args, log: Path, stall: str) -> bool:
    """Run ``sedkit args`` with ``stall`` and SIGKILL it when its stderr reports the stall (a line read from
    the pipe, not a time): True if it was killed there, False if it ended without stalling. Its stderr
    goes to ``log``."""
    env = {**os.environ, "SED_TEST_STALL": stall, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOOK, *map(str, args)],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    lines, killed = [], False
    for line in proc.stderr:
        lines.append(line)
        if MARK in line:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
    proc.stderr.close()
    proc.wait()
    log.write_text("".join(lines))
    return killed


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("killcorpus")
    make_esc50(root, seed=0, num_classes=3, clips_per_class=10, duration=3.0, sample_rate=16000)
    return root


def fit_args(corpus: Path, run: Path) -> list:
    return [
        "fit",
        "--config",
        RECIPE,
        f"--data.init_args.root={corpus}",
        f"--trainer.default_root_dir={run}",
        "--trainer.max_epochs=4",
        "--data.init_args.batch_size=8",
        "--trainer.enable_progress_bar=false",
        "--ckpt_path=last",
    ]


def check_checkpoints(run: Path) -> list[Path]:
    """Every visible checkpoint left in the run loads (weights_only, and as a sed model)."""
    found = (
        sorted(p for p in (run / "checkpoints").glob("*.ckpt") if not p.name.startswith("."))
        if (run / "checkpoints").is_dir()
        else []
    )
    for ckpt in found:
        torch.load(ckpt, map_location="cpu", weights_only=True)
        load_model(ckpt)
    return found


def _steps_done(run: Path) -> int:
    last = run / "checkpoints" / "last.ckpt"
    return torch.load(last, map_location="cpu", weights_only=True)["global_step"] if last.exists() else 0


def test_fit_killed_anywhere_resumes_to_the_uninterrupted_result(corpus, tmp_path):
    """Killed inside two checkpoint writes and after two seeded random optimizer steps: every kill happens
    at an event the run reports (never after a wall-clock delay), so the test does not depend on speed."""
    whole = tmp_path / "whole"
    log = tmp_path / "whole.log"
    assert sedkit(fit_args(corpus, whole), log).wait(timeout=600) == 0, log.read_text()[-3000:]
    total = _steps_done(whole)
    run = tmp_path / "killed"
    rng = random.Random(0)
    killed = 0
    for i, stall in enumerate(
        ["save:1", "save:3", "step", "step"]
    ):  # in the first write, a later one, 2 steps
        if stall == "step":  # a step the resumed run still takes: it restarts from its last checkpoint
            left = total - _steps_done(run)
            assert left >= 2, f"only {left} steps left to kill in"
            stall = f"step:{rng.randint(1, left - 1)}"
        log = tmp_path / f"kill{i}.log"
        killed += kill_at_stall(fit_args(corpus, run), log, stall)
        check_checkpoints(run)
        if stall.startswith(
            "save"
        ):  # the stalled write left its half-written temporary file, and nothing else
            assert [p.name for p in (run / "checkpoints").glob(".*.ckpt")], "no temporary file at the kill"
    assert killed == 4
    log = tmp_path / "final.log"
    assert sedkit(fit_args(corpus, run), log).wait(timeout=600) == 0, log.read_text()[-3000:]
    assert not list((run / "checkpoints").glob(".*")), "a resumed run removes the temporary files left behind"
    final = check_checkpoints(run)
    assert {p.name for p in final} >= {"last.ckpt"}
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (whole, run))
    assert a["epoch"] == b["epoch"] == 3 and a["global_step"] == b["global_step"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_classify_output_is_absent_or_complete(corpus, tmp_path):
    ckpt = tmp_path / "model.pt"
    from sed.checkpoint import save_model
    from sed.models import create_model

    save_model(ckpt, create_model("cnn_tiny", num_classes=3, labels=["a", "b", "c"], clip_seconds=1.0))
    files = sorted((corpus / "audio").glob("*.wav"))
    out = tmp_path / "scores.jsonl"
    args = ["classify", *files, "--checkpoint", ckpt, "--format", "json", "--output", out, "--device", "cpu"]
    log = tmp_path / "ref.log"
    assert sedkit(args, log).wait(timeout=300) == 0, log.read_text()[-3000:]
    reference = out.read_bytes()
    assert len(reference.splitlines()) == len(files) and json.loads(reference.splitlines()[0])
    rng = random.Random(1)  # killed in the output's fsync, then while reading 3 seeded random files
    stalls = ["fsync:1"] + [f"read:{rng.randint(1, len(files))}" for _ in range(3)]
    for i, stall in enumerate(stalls):
        out.unlink(missing_ok=True)
        log = tmp_path / f"classify{i}.log"
        assert kill_at_stall(args, log, stall), f"no stall at {stall}:\n{log.read_text()[-3000:]}"
        assert not out.exists(), f"output after kill {i} at {stall}"  # the write had not been committed
