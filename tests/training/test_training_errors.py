"""Training verbs (fit/validate/test/predict/kfold/finetune) on the mistakes a newcomer makes: one ``error:``
line naming the cause (exit 2; ``--traceback`` or SED_TRACEBACK=1 for the trace), never an empty run that
says nothing, never a finished run's history corrupted; the demo's folds; what a training run prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sed.cli.main import main
from sed.data.synth.corpora import make_esc50
from sed.training.demo import RECIPE
from tests.tasks.conftest import write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("esc")
    make_esc50(root, seed=0, num_classes=3, clips_per_class=10, duration=1.0, sample_rate=16000)
    return root


@pytest.fixture(scope="module")
def fitted(corpus, tmp_path_factory):
    """A finished 2-epoch run (its config, its run folder)."""
    folder = tmp_path_factory.mktemp("fit")
    cfg = write_config(folder, corpus)
    assert main(["fit", "--config", str(cfg)]) == 0
    return cfg, folder / "run"


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("error:")]


def one_error(capsys, argv, code=2) -> str:
    assert main(argv) == code
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------------------------- one line, exit 2
def test_wrong_data_root_is_one_line(fitted, tmp_path, capsys):
    cfg, _ = fitted
    line = one_error(
        capsys,
        [
            "fit",
            "--config",
            str(cfg),
            f"--data.init_args.root={tmp_path / 'nope'}",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
        ],
    )
    assert (
        line == f"error: {tmp_path / 'nope' / 'meta' / 'esc50.csv'}: ESC-50 metadata not found "
        "(expected <root>/meta/esc50.csv)"
    )


def test_unknown_option_and_missing_config_are_one_line(fitted, tmp_path, capsys):
    cfg, _ = fitted
    line = one_error(capsys, ["fit", "--config", str(cfg), "--model.init_args.no_such_option=1"])
    assert "no_such_option" in line and "not accepted" in line
    line = one_error(capsys, ["validate", "--config", str(tmp_path / "missing.yaml")])
    assert str(tmp_path / "missing.yaml") in line and "does not exist" in line


def test_short_name_without_network_is_one_line(fitted, tmp_path, capsys, monkeypatch):
    from sed.models.pretrained import sources

    def offline(*args, **kwargs):
        raise OSError("Cannot reach https://huggingface.co: offline")

    for fetcher in ("hub_file", "hub_snapshot", "url_file", "timm_state"):
        monkeypatch.setattr(sources, fetcher, offline)
    cfg, _ = fitted
    line = one_error(
        capsys,
        [
            "finetune",
            "--from",
            "ast-audioset-0.4593",
            "--config",
            str(cfg),
            "--model.init_args.model_name=ast_base",
            f"--trainer.default_root_dir={tmp_path}",
        ],
    )
    assert line.startswith("error: ast-audioset-0.4593: could not be downloaded") and "offline" in line


def test_finetune_from_a_family_without_pretrained_weights(fitted, tmp_path, capsys):
    cfg, run = fitted
    line = one_error(
        capsys,
        [
            "finetune",
            "--from",
            str(run / "checkpoints" / "last.ckpt"),
            "--config",
            str(cfg),
            f"--trainer.default_root_dir={tmp_path}",
        ],
    )
    assert "'cnn_tiny'" in line and "ast, beats, ced, clap, crnn, efficientat" in line


def test_resume_with_fewer_epochs_than_done_is_one_line(fitted, tmp_path, capsys):
    cfg, run = fitted
    before = (run / "metrics.csv").read_bytes()
    line = one_error(capsys, ["fit", "--config", str(cfg), "--trainer.max_epochs=1", "--ckpt_path=last"])
    assert "2 epoch(s)" in line and "max_epochs is 1" in line and "last.ckpt" in line
    assert (run / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize("how", ["flag", "env"])
def test_traceback_on_request(fitted, tmp_path, capsys, monkeypatch, how):
    cfg, _ = fitted
    argv = ["fit", "--config", str(cfg), f"--data.init_args.root={tmp_path / 'nope'}"]
    if how == "flag":
        argv.append("--traceback")
    else:
        monkeypatch.setenv("SED_TRACEBACK", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "DatasetError" in err
    assert (
        err.rstrip().splitlines()[-1].startswith("error: ") and "esc50.csv" in err.rstrip().splitlines()[-1]
    )


def test_finetune_help_shows_every_fit_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--from" in out and "--trainer.max_epochs" in out and "--data" in out and "--ckpt_path" in out
    assert out.index("--from") < out.index("--trainer.max_epochs")


# --------------------------------------------------------------------------------- runs that say so
def test_fit_on_an_unreadable_training_shard_is_an_error(corpus, tmp_path, capsys):
    from sed.data.shards.writer import read_source, write_shards

    for name in ("train", "val"):
        write_shards(read_source(corpus), tmp_path / name, shard_size=1000)
    for shard in (tmp_path / "train").glob("*.tar"):
        shard.write_bytes(b"not a tar" * 100)
    cfg = write_config(
        tmp_path,
        corpus,
        data__source="shards",
        data__shards=str(tmp_path / "train"),
        data__val_shards=str(tmp_path / "val"),
        data__root=None,
        data__val_folds=None,
        data__test_folds=None,
    )
    assert main(["fit", "--config", str(cfg)]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert (
        lines[-1] == f"error: {tmp_path / 'train'}: no training step ran: the training data gave no batch "
        "(every training file or shard unreadable or empty)"
    )
    assert not list((tmp_path / "run").rglob("*.ckpt"))


@pytest.mark.parametrize("verb", ["validate", "test"])
def test_validate_and_test_after_fit_keep_the_run_history(fitted, capsys, verb):
    import csv

    cfg, run = fitted
    before = (run / "metrics.csv").read_bytes()
    assert main([verb, "--config", str(cfg), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]) == 0
    assert (run / "metrics.csv").read_bytes() == before  # the learning curves stay fit's
    key = "val_acc" if verb == "validate" else "test_acc"
    rows = [r for r in csv.DictReader(open(run / f"{verb}_metrics.csv")) if r.get(key)]
    assert len(rows) == 1 and 0 <= float(rows[0][key]) <= 1


def test_demo_selects_and_scores_on_different_folds():
    data = yaml.safe_load(RECIPE.read_text())["data"]["init_args"]
    assert set(data["val_folds"]).isdisjoint(data["test_folds"])
    assert set(
        data.get("train_folds") or set(range(1, 6)) - set(data["val_folds"]) - set(data["test_folds"])
    ).isdisjoint(set(data["val_folds"]) | set(data["test_folds"]))


def test_fewshot_eval_names_a_missing_data_file(fitted, tmp_path, capsys):
    _, run = fitted
    missing = tmp_path / "missing.yaml"
    line = one_error(
        capsys,
        ["fewshot-eval", "--data", str(missing), "--checkpoint", str(run / "checkpoints" / "last.ckpt")],
    )
    assert line.startswith(f"error: {missing}: ") and "No such file" in line


# ------------------------------------------------------------------------- what a training run prints
def test_fit_prints_progress_and_no_lightning_noise(corpus, tmp_path):
    """stderr not a terminal: one line per epoch; no LightningCLI args warning, tips, deprecations, FLOPs."""
    cfg = write_config(
        tmp_path, corpus, trainer__enable_progress_bar=True, trainer__enable_model_summary=True
    )
    r = subprocess.run(
        [sys.executable, "-m", "sed", "fit", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for noise in ("args parameter", "Tip", "deprecated", "FLOPs", "Flops", "configure_callbacks"):
        assert noise not in r.stderr, r.stderr
    epochs = [line for line in r.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], r.stderr
    assert all("train_loss" in line and "val_loss" in line and "val_acc" in line for line in epochs)
    assert "Total params" in r.stderr  # the model summary is kept
