"""transfer: probe -- embeddings cached once, the head fitted on them (logistic or ridge)."""

import logging
import warnings

import pytest
import pytorch_lightning as pl
import torch

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.data.datamodule import AudioDataModule
from sed.models import create_model, load_model
from sed.models.linear_probe import fit_logistic, fit_ridge
from sed.tasks import ClassificationTask


def _trainer(epochs: int) -> pl.Trainer:
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


@pytest.mark.parametrize("probe", ["logistic", "linear"])
def test_probe_head_equals_the_fit_on_directly_computed_embeddings(tiny_corpus, probe):
    dm = AudioDataModule(source="esc50", root=str(tiny_corpus), clip_seconds=1.0, batch_size=6, val_folds=[5],
                         cache_audio=True)
    torch.manual_seed(0)
    task = ClassificationTask(model_name="ast_micro", model_kwargs={"input_tdim": 98}, num_classes=dm.num_classes,
                              labels=dm.label_names, transfer="probe", probe=probe, probe_l2=1e-2)
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


def test_probe_refuses_augmentation_and_heads_without_a_linear():
    with pytest.raises(ValueError, match="takes no freqm"):
        ClassificationTask(model_name="cnn_tiny", num_classes=3, transfer="probe", freqm=8)
    with pytest.raises(ValueError, match="probe must be one of"):
        ClassificationTask(model_name="cnn_tiny", num_classes=3, transfer="probe", probe="svm")


def test_finetune_cli_with_a_probe(tiny_config, tmp_path):
    torch.manual_seed(1)
    src = save_model(tmp_path / "backbone.pt", create_model("ast_micro", num_classes=5, input_tdim=98))
    cfg = tiny_config(model__model_name="ast_micro", model__model_kwargs={"input_tdim": 98}, trainer__max_epochs=1)
    assert main(["finetune", "--from", str(src), "--config", str(cfg), "--model.init_args.transfer=probe"]) == 0
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    model, desc = load_model(ckpt)
    start, _ = load_model(src)
    assert desc["labels"] and len(desc["labels"]) == 3
    # the backbone is the source's, bit for bit; only the head is new
    same = {k: v for k, v in start.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in same.items())
