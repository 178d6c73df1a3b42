"""transfer: probe -- embeddings cached once, the head fitted on them (logistic or ridge)."""

import logging
import warnings

import pytest
import pytorch_lightning as pl
import torch

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.data.modules.audio import AudioDataModule
from sed.models import create_model, load_model
from sed.models.linear_probe import fit_logistic, fit_ridge
from sed.tasks import ClassificationTask, ProbeTask


def _trainer(epochs: int) -> pl.Trainer:
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


@pytest.mark.parametrize("probe", ["logistic", "linear"])
def test_probe_head_equals_the_fit_on_directly_computed_embeddings(tiny_corpus, probe):
    dm = AudioDataModule(
        source="esc50", root=str(tiny_corpus), clip_seconds=1.0, batch_size=6, val_folds=[5], cache_audio=True
    )
    torch.manual_seed(0)
    task = ProbeTask(
        model_name="ast_micro",
        model_kwargs={"input_tdim": 98},
        num_classes=dm.num_classes,
        labels=dm.label_names,
        probe=probe,
        probe_l2=1e-2,
    )
    task.configure_callbacks = lambda: []
    backbone = {k: v.clone() for k, v in task.model.state_dict().items() if not k.startswith("head.")}
    trainer = _trainer(2)
    trainer.fit(task, dm)
    # the backbone did not move; every training clip was embedded once (1-s clips: no random crop)
    assert all(torch.equal(v, task.model.state_dict()[k]) for k, v in backbone.items())
    train = dm.datasets["train"]
    assert len(task.probe_cache.rows) == len(train) == 24
    batch = [train[i] for i in range(len(train))]
    wave = torch.stack([b["wave"] for b in batch])
    y = torch.tensor([b["label"] for b in batch])
    task.model.eval()
    with torch.no_grad():
        feats = task.model.head[0](task.model.embed(wave))
    w, b = (fit_logistic if probe == "logistic" else fit_ridge)(feats, y, 3, l2=1e-2)
    assert torch.allclose(task.model.head[1].weight, w, atol=2e-4)
    assert torch.allclose(task.model.head[1].bias, b, atol=2e-4)
    assert trainer.callback_metrics["probe_clips"] == 24
    assert trainer.callback_metrics["probe_train_acc"] >= 0.5


def test_probe_refuses_augmentation_training_options_and_unknown_probes():
    """A probe fits its head in closed form: options it does not honour are errors naming them."""
    for option in ({"freqm": 8}, {"mixup": 0.5}, {"semi": "pseudo_label"}, {"lr": 0.1}, {"transfer": "head"}):
        with pytest.raises(TypeError, match=next(iter(option))):
            ProbeTask(model_name="cnn_tiny", num_classes=3, **option)
    with pytest.raises(ValueError, match="probe must be one of"):
        ProbeTask(model_name="cnn_tiny", num_classes=3, probe="svm")
    with pytest.raises(ValueError, match="class_path sed.tasks.ProbeTask"):
        ClassificationTask(model_name="cnn_tiny", num_classes=3, transfer="probe")


def test_finetune_cli_with_a_probe(tiny_config, tmp_path):
    torch.manual_seed(1)
    src = save_model(tmp_path / "backbone.pt", create_model("ast_micro", num_classes=5, input_tdim=98))
    cfg = tiny_config(
        model__model_name="ast_micro", model__model_kwargs={"input_tdim": 98}, trainer__max_epochs=1
    )
    assert (
        main(["finetune", "--from", str(src), "--config", str(cfg), "--model.class_path=sed.tasks.ProbeTask"])
        == 0
    )
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    model, desc = load_model(ckpt)
    start, _ = load_model(src)
    assert desc["labels"] and len(desc["labels"]) == 3
    # the backbone is the source's, bit for bit; only the head is new
    same = {k: v for k, v in start.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in same.items())


def test_two_ddp_processes_pool_their_embeddings(tiny_config, tiny_corpus, tmp_path):
    """2 CPU processes (gloo), each embedding half of the training clips: the fitted head is the fit on all of
    them, as in one process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    cfg_path = tiny_config(
        model__model_name="ast_micro",
        model__model_kwargs={"input_tdim": 98},
        model__probe_l2=1e-2,
        trainer__max_epochs=1,
    )
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["trainer"].update(devices=2, strategy="ddp")
    cfg["model"]["class_path"] = "sed.tasks.ProbeTask"
    for option in ("lr", "optimizer"):  # nothing is trained by gradient: a probe takes no optimiser options
        del cfg["model"]["init_args"][option]
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run(
        [sys.executable, "-m", "sed", "fit", "--config", str(cfg_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    model, _ = load_model(next((tmp_path / "run").rglob("last.ckpt")))
    dm = AudioDataModule(
        source="esc50", root=str(tiny_corpus), clip_seconds=1.0, val_folds=[5], test_folds=[5]
    )
    dm.setup("fit")
    train = dm.datasets["train"]
    wave = torch.stack([train[i]["wave"] for i in range(len(train))])
    y = torch.tensor([train[i]["label"] for i in range(len(train))])
    with torch.no_grad():
        feats = model.head[0](model.embed(wave))
    w, b = fit_logistic(feats, y, 3, l2=1e-2)
    assert len(train) == 24

    def objective(weight, bias):  # what fit_logistic minimises on all 24 clips (strictly convex)
        logits = feats.double() @ weight.double().T + bias.double()
        return float(torch.nn.functional.cross_entropy(logits, y) + 0.5e-2 * (weight.double() ** 2).sum())

    # the fit on all 24: at the optimum, to L-BFGS's tolerance (the rows arrive in another order, so the
    # weights themselves agree only to ~1e-3, which depends on the machine's arithmetic) ...
    best = objective(w, b)
    assert objective(model.head[1].weight.detach(), model.head[1].bias.detach()) - best < 1e-6
    # ... not a fit on 12 of them, as one rank alone would give (far from that optimum)
    for half in (slice(0, 24, 2), slice(1, 24, 2)):
        assert objective(*fit_logistic(feats[half], y[half], 3, l2=1e-2)) - best > 1e-3
