"""ClassificationTask through `sedkit fit|test|predict|kfold|plot` on a tiny synthetic corpus."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from sed.cli.main import main
from sed.metrics import read_confusion_csv, read_history
from sed.tasks import ClassificationTask
from sed.training.kfold import summarize
from tests.tasks.conftest import write_config


def run_dir(cfg):
    return Path(yaml.safe_load(cfg.read_text())["trainer"]["default_root_dir"])


@pytest.fixture(scope="module")
def fitted(tiny_corpus, tmp_path_factory):
    """One 6-epoch fit shared by the tests that only read its results."""
    cfg = write_config(tmp_path_factory.mktemp("fit"), tiny_corpus, trainer__max_epochs=6)
    assert main(["fit", "--config", str(cfg)]) == 0
    return cfg


def test_fit_loss_falls_and_run_dir_is_complete(fitted):
    run = run_dir(fitted)
    hist = read_history(run)
    train = [v for _, v in hist["train_loss"]]
    assert len(train) == 6 and train[-1] < 0.7 * train[0]
    for name in (
        "config.yaml",
        "labels.json",
        "environment.json",
        "metrics.csv",
        "learning_curves.png",
        "confusion_val.csv",
        "diagnosis.json",
        "checkpoints/last.ckpt",
    ):
        assert (run / name).exists(), name
    assert json.loads((run / "labels.json").read_text()) == ["tone", "chirp", "noise_burst"]
    env = json.loads((run / "environment.json").read_text())
    assert env["versions"]["torch"] == torch.__version__
    assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    assert list(run.glob("events.out.tfevents.*"))


def test_resume_continues_epochs_and_optimizer_state(tiny_config):
    cfg = tiny_config(trainer__max_epochs=2)
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpt = run_dir(cfg) / "checkpoints" / "last.ckpt"
    first = torch.load(ckpt, weights_only=True)
    assert first["epoch"] == 1 and first["optimizer_states"][0]["state"]
    assert main(["fit", "--config", str(cfg), "--trainer.max_epochs=4", "--ckpt_path=last"]) == 0
    second = torch.load(ckpt, weights_only=True)
    assert second["epoch"] == 3 and second["global_step"] == 2 * first["global_step"]
    step = next(iter(second["optimizer_states"][0]["state"].values()))["step"]
    assert float(step) == second["global_step"]  # Adam's step count carried over, not restarted
    epochs = sorted(
        {int(float(r["epoch"])) for r in csv.DictReader(open(run_dir(cfg) / "metrics.csv")) if r["epoch"]}
    )
    assert epochs == [0, 1, 2, 3]  # one history across both sessions


class StopAfterEpoch(pl.Callback):
    """Ends a fit after ``epoch`` as an interruption would (the schedule still plans every epoch)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


@pytest.mark.parametrize("balanced", [False, True])
def test_resumed_run_equals_uninterrupted_run(tiny_corpus, tmp_path, balanced):
    """3 epochs in one go, and a run stopped after epoch 0 then resumed from last.ckpt: the same
    weights, optimiser state and history, bit for bit (shuffling or balanced sampling, random crops,
    SpecAugment and mixup continue from the checkpointed random state)."""
    over = dict(
        trainer__max_epochs=3, data__balanced=balanced, model__freqm=8, model__timem=20, model__mixup=0.5
    )
    (tmp_path / "whole").mkdir()
    (tmp_path / "split").mkdir()
    whole = write_config(tmp_path / "whole", tiny_corpus, **over)
    split = write_config(tmp_path / "split", tiny_corpus, **over)
    stop = f"--trainer.callbacks+={__name__}.StopAfterEpoch"
    assert main(["fit", "--config", str(whole)]) == 0
    assert main(["fit", "--config", str(split), stop, "--trainer.callbacks.epoch=0"]) == 0
    assert torch.load(run_dir(split) / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    assert main(["fit", "--config", str(split), "--ckpt_path=last"]) == 0
    a, b = (torch.load(run_dir(c) / "checkpoints" / "last.ckpt", weights_only=True) for c in (whole, split))
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    moments = [next(iter(c["optimizer_states"][0]["state"].values())) for c in (a, b)]
    assert torch.equal(moments[0]["exp_avg"], moments[1]["exp_avg"])
    loss = [[v for _, v in read_history(run_dir(c))["train_loss"]] for c in (whole, split)]
    assert len(loss[0]) == 3 and loss[0] == loss[1]


def test_checkpoint_from_fit_classifies_alone(fitted, tiny_corpus, capsys):
    cfg = fitted
    ckpt = run_dir(cfg) / "checkpoints" / "last.ckpt"
    files = sorted((tiny_corpus / "audio").glob("5-*.wav"))
    assert (
        main(["classify", *map(str, files), "--checkpoint", str(ckpt), "--format", "json", "--top-k", "1"])
        == 0
    )
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 6 and all(r["top_k"][0]["label"] in ("tone", "chirp", "noise_burst") for r in rows)


def test_test_and_predict_verbs(fitted):
    cfg = fitted
    ckpt = str(run_dir(cfg) / "checkpoints" / "last.ckpt")
    assert main(["test", "--config", str(cfg), f"--ckpt_path={ckpt}"]) == 0
    assert (run_dir(cfg) / "confusion_test.csv").exists() and (run_dir(cfg) / "per_class_test.csv").exists()
    assert main(["predict", "--config", str(cfg), f"--ckpt_path={ckpt}"]) == 0
    preds = [json.loads(x) for x in (run_dir(cfg) / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 6 and {t["label"] for t in preds[0]["top_k"]} == {"tone", "chirp", "noise_burst"}


def test_kfold_table_equals_per_fold_results(tiny_config, tmp_path, capsys):
    cfg = tiny_config(trainer__max_epochs=1)
    root = tmp_path / "kf"
    assert main(["kfold", "--config", str(cfg), "--folds", "1,2", "--root", str(root), "--ckpt", "last"]) == 0
    out = capsys.readouterr().out
    data = json.loads((root / "kfold.json").read_text())
    accs = [r["test_acc"] for r in data["folds"]]
    assert [r["fold"] for r in data["folds"]] == [1, 2]
    assert data["summary"]["test_acc"]["mean"] == pytest.approx(sum(accs) / 2)
    assert (root / "kfold_summary.png").is_file() and (root / "confusion_pooled.png").is_file()
    pooled = sum(read_confusion_csv(next((root / f"fold{k}").rglob("confusion_test.csv")))[0] for k in (1, 2))
    assert (read_confusion_csv(root / "confusion_pooled.csv")[0] == pooled).all() and pooled.sum() == 12
    assert data["summary"]["test_acc"]["std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
    again = summarize(data["folds"])
    assert again.keys() == data["summary"].keys()
    assert all(again[k] == pytest.approx(data["summary"][k]) for k in again)
    assert "mean" in out and "std" in out and (root / "fold1" / "checkpoints" / "last.ckpt").exists()
    rows = list(csv.reader(open(root / "kfold.csv")))
    assert rows[0][0] == "fold" and [r[0] for r in rows[1:]] == ["1", "2", "mean", "std"]


def test_plot_verb(fitted, capsys):
    cfg = fitted
    assert main(["plot", str(run_dir(cfg))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("diagnosis: ") and "learning_curves.png" in out
    assert main(["plot", str(run_dir(cfg) / "nothing")]) == 1


def test_usage_and_data_errors(tiny_config, tmp_path, capsys):
    assert (
        main(["fit", "--config", str(tiny_config()), "--model.init_args.no_such_option=1"]) == 2
    )  # one line
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dog").mkdir()
    (broken / "dog" / "a.wav").write_bytes(b"nope")
    (broken / "cat").mkdir()
    (broken / "cat" / "b.wav").write_bytes(b"")
    cfg = tiny_config(
        data__source="folder", data__root=str(broken), data__val_folds=None, data__test_folds=None
    )
    assert main(["fit", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "2 of 2 audio file(s) cannot be used" in err and "a.wav" in err and "b.wav" in err


def test_transfer_frozen_keeps_backbone_fixed():
    task = ClassificationTask(
        model_name="ast_micro", num_classes=3, model_kwargs={"input_tdim": 100}, transfer="frozen"
    )
    task.train()
    assert not task.model.blocks.training and task.model.head.training
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    opt = torch.optim.SGD([p for p in task.parameters() if p.requires_grad], lr=0.1)
    batch = {
        "wave": torch.randn(4, 16000) * 0.1,
        "lengths": torch.full((4,), 16000),
        "label": torch.tensor([0, 1, 2, 0]),
    }
    loss = task.training_step(batch, 0)
    loss.backward()
    opt.step()
    after = task.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("head.") for k in changed)


@pytest.mark.skipif(sys.platform != "linux", reason="gloo DDP test on Linux")
def test_ddp_two_cpu_processes_gather_metrics(tiny_config, tmp_path):
    cfg = tiny_config(trainer__max_epochs=1, trainer__devices=2, trainer__strategy="ddp")
    r = subprocess.run(
        [sys.executable, "-m", "sed", "fit", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    run = run_dir(cfg)
    logged = [float(x["val_acc"]) for x in csv.DictReader(open(run / "metrics.csv")) if x.get("val_acc")][-1]
    # the 6 validation clips are split over 2 ranks; the logged accuracy must cover all 6
    from sed.inference.classifier import Classifier

    clf = Classifier.from_pretrained(run / "checkpoints" / "last.ckpt", device="cpu")
    files = sorted(
        (Path(yaml.safe_load(cfg.read_text())["data"]["init_args"]["root"]) / "audio").glob("5-*.wav")
    )
    preds = clf.predict(files, top_k=1)
    truth = {"0": "tone", "1": "chirp", "2": "noise_burst"}
    acc = sum(p["top_k"][0]["label"] == truth[f.stem.split("-")[-1]] for p, f in zip(preds, files)) / len(
        files
    )
    assert logged == pytest.approx(acc)
