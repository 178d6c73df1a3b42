"""SELDTask and StarssDataModule on a tiny synthetic STARSS corpus."""

import pytest
import torch
import yaml

from sed.data.modules.seld import StarssDataModule
from sed.data.synth.corpora import make_starss
from sed.tasks.seld import SELDTask, targets_to_events

SMALL_SELDNET = {"nb_cnn2d_filt": 16, "rnn_size": 32, "fnn_size": 32, "nb_heads": 4}


@pytest.fixture(scope="module")
def starss_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("starss")
    make_starss(root, seed=0, files_per_split=2, duration=4.0, num_classes=3)
    return root


def test_datamodule_links_and_items(starss_root):
    dm = StarssDataModule(str(starss_root), num_classes=3, sequence_seconds=2.0, batch_size=2)
    assert (
        dm.num_classes == 3
        and dm.label_names == ["class_0", "class_1", "class_2"]
        and dm.is_multi_label is False
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (2, 4, 48000) and batch["target"].shape == (2, 20, 6, 4, 3)
    val = next(iter(dm.val_dataloader()))
    assert val["audio"].shape == (1, 4, 96000)  # whole files
    feats = list(dm.standardizer_features(lambda w: torch.ones(1, 7, w.shape[-1] // 480, 64)))
    assert len(feats) == 2 and feats[0].shape == (7, 200, 64)


def test_targets_to_events_roundtrip():
    t = torch.zeros(3, 6, 4, 2)
    t[1, 0, :, 1] = torch.tensor([1.0, 0.0, 1.0, 0.0])  # class 1, azimuth 90, elevation 0
    (ev,) = targets_to_events(t)
    assert (
        (ev.frame, ev.cls) == (1, 1)
        and ev.azimuth == pytest.approx(90.0)
        and ev.elevation == pytest.approx(0.0)
    )


@pytest.mark.parametrize("name,kwargs", [("resnet_conformer_tiny", {}), ("seldnet_baseline", SMALL_SELDNET)])
def test_loss_falls_with_acs(starss_root, name, kwargs):
    torch.manual_seed(0)
    dm = StarssDataModule(str(starss_root), num_classes=3, sequence_seconds=2.0, batch_size=4)
    dm.setup("fit")
    task = SELDTask(name, num_classes=3, model_kwargs=kwargs, acs_p=1.0, freqm=4, timem=5, lr=3e-3)
    task.model.standardizer.fit(dm.standardizer_features(task.model.features))
    assert task.model.standardizer.fitted
    batch = next(iter(dm.train_dataloader()))
    opt = torch.optim.Adam(task.parameters(), lr=3e-3)
    task.train()
    losses = []
    for _ in range(15):
        loss = task.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:3]) / 3, losses


def test_cached_feature_path_applies_acs(starss_root, tmp_path):
    dm = StarssDataModule(
        str(starss_root), num_classes=3, sequence_seconds=2.0, batch_size=2, cache_dir=str(tmp_path / "cache")
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "features" in batch and batch["features"].shape == (2, 7, 100, 64)
    task = SELDTask("resnet_conformer_tiny", num_classes=3, acs_p=1.0)
    task.train()
    loss = task.training_step(batch, 0)
    assert torch.isfinite(loss)


def test_cli_fit_logs_val_seld(starss_root, tmp_path):
    from sed.models.loading import load_model
    from sed.training.lightning_cli import make_cli

    cfg = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 2,
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(tmp_path / "run"),
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
        },
        "model": {
            "class_path": "sed.tasks.seld.SELDTask",
            "init_args": {"model_name": "resnet_conformer_tiny", "acs_p": 1.0, "lr": 0.003},
        },
        "data": {
            "class_path": "sed.data.modules.seld.StarssDataModule",
            "init_args": {
                "root": str(starss_root),
                "num_classes": 3,
                "sequence_seconds": 2.0,
                "batch_size": 4,
            },
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cli = make_cli(["fit", "--config", str(path)])
    metrics = cli.trainer.callback_metrics
    assert "val_SELD" in metrics and 0.0 <= float(metrics["val_SELD"]) and "val_F/class_0" in metrics
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "val_SELD" in header and "val_LE" in header
    best = cli.trainer.checkpoint_callback.best_model_path
    assert best and cli.trainer.checkpoint_callback.monitor == "val_SELD"
    model, desc = load_model(best)
    assert (
        desc["task"] == "seld"
        and desc["channels"] == "foa"
        and desc["label_hop_seconds"] == pytest.approx(0.1)
    )
    assert model.standardizer.fitted and desc["labels"] == ["class_0", "class_1", "class_2"]
    assert model(torch.zeros(1, 4, 4800)).shape == (1, 2, 27)
