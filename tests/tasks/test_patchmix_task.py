"""PatchMixTask and IcbhiDataModule on a tiny synthetic ICBHI corpus (1-s cycles, ast_micro at 98 frames)."""

import copy
import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from sed.data.modules.icbhi import IcbhiDataModule
from sed.data.synth.corpora import make_icbhi
from sed.models.loading import load_model
from sed.tasks.patchmix import PatchMixTask
from sed.training.lightning_cli import make_cli

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "icbhi_ast_patchmix"
TDIM = 98  # 1-s cycles: (16000 - 400) / 160 + 1 frames


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared CPU: one intra-op thread is ~40x faster than oversubscribed ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def icbhi_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("icbhi")
    make_icbhi(root, seed=0, num_patients=6, recordings_per_patient=2, duration=10.0)
    return root


@pytest.fixture(scope="module")
def batch(icbhi_root):
    dm = IcbhiDataModule(str(icbhi_root), cycle_seconds=1.0, batch_size=6)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def make_task(method, **kw):
    kw = {
        "model_name": "ast_micro",
        "model_kwargs": {"input_tdim": TDIM},
        "num_classes": 4,
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        **kw,
    }
    return PatchMixTask(method=method, **kw)


def test_datamodule_links_without_audio_and_splits(icbhi_root, tmp_path):
    dm = IcbhiDataModule(str(tmp_path / "nowhere"), classes=2)  # nothing is read in __init__
    assert (dm.num_classes, dm.label_names, dm.is_multi_label) == (2, ["normal", "abnormal"], False)
    dm = IcbhiDataModule(str(icbhi_root), cycle_seconds=1.0, batch_size=3)
    assert dm.num_classes == 4 and dm.label_names == ["normal", "crackle", "wheeze", "both"]
    dm.setup("fit")
    dm.setup("test")
    train, val, test = (dm.dataset(s) for s in ("train", "val", "test"))
    assert sum(dm.class_counts()) == len(train)
    patients = [{m[1] for m in d.meta} for d in (train, val, test)]
    assert not patients[0] & patients[1]  # validation carved by patient
    loader = dm.train_dataloader()
    assert loader.drop_last and len(loader) == len(train) // 3
    b = next(iter(dm.val_dataloader()))
    assert b["wave"].shape[1] == 16000 and b["label"].dtype == torch.long
    with pytest.raises(ValueError):
        IcbhiDataModule(str(icbhi_root), fold=7)


@pytest.mark.parametrize("method", ["ce", "patchmix", "patchmix_cl"])
def test_training_loss_falls(method, batch):
    torch.manual_seed(0)
    task = make_task(method)
    opt = torch.optim.Adam(task.parameters(), lr=1e-3)

    def loss_at(seed):  # the same Patch-Mix draws before and after training
        torch.manual_seed(seed)
        return task.training_loss(batch)[0]

    task.train()
    with torch.no_grad():
        before = loss_at(123).item()
    for step in range(20):
        opt.zero_grad()
        loss_at(step).backward()
        opt.step()
    with torch.no_grad():
        after = loss_at(123).item()
    assert after < 0.9 * before, (before, after)
    if method == "patchmix_cl":
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.projector.parameters())


def test_projector_width_and_method_checks():
    assert make_task("patchmix_cl").projector[-1].out_features == 64
    with pytest.raises(ValueError, match="proj_dim"):
        make_task("patchmix_cl", proj_dim=768)
    with pytest.raises(ValueError, match="method"):
        make_task("mixup")


class _Fixed(torch.utils.data.Dataset):
    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.batch


def _one_step(task, batch, seed, folder):
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=pl.loggers.CSVLogger(folder),
        default_root_dir=folder,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    loader = torch.utils.data.DataLoader(_Fixed(batch), batch_size=None)
    torch.manual_seed(seed)
    trainer.fit(task, train_dataloaders=loader)


def test_ma_update_halves_each_step(batch, tmp_path):
    torch.manual_seed(0)
    plain = make_task("patchmix_cl", ma_update=False)  # projector BatchNorm: buffers are blended too
    ma = copy.deepcopy(plain)
    ma.ma_update = True
    old = {k: v.clone() for k, v in ma._ma_state().items()}
    _one_step(plain, batch, 5, tmp_path / "plain")
    _one_step(ma, batch, 5, tmp_path / "ma")
    new, got = plain._ma_state(), ma._ma_state()
    assert any(not torch.equal(old[k], new[k]) for k in old if "running_mean" in k)
    for k, v in got.items():
        if v.is_floating_point():
            torch.testing.assert_close(v.detach(), 0.5 * old[k] + 0.5 * new[k].detach(), rtol=1e-5, atol=1e-6)
        else:  # num_batches_tracked: (0 + 1) / 2 truncated
            assert int(v) == int(0.5 * int(old[k]) + 0.5 * int(new[k]))
    assert not torch.equal(got["model.pos_embed"], old["model.pos_embed"])


def _cfg(tmp_path, root, method="patchmix_cl"):
    cfg = yaml.safe_load((RECIPES / f"{method}.yaml").read_text())
    cfg["trainer"].update(
        {
            "max_epochs": 2,
            "accelerator": "cpu",
            "default_root_dir": str(tmp_path / "run"),
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            "precision": "32-true",
        }
    )
    m = cfg["model"]["init_args"]
    m.update({"model_name": "ast_micro", "pretrained": None, "lr": 1e-3, "freqm": 12, "timem": 20})
    m["model_kwargs"] = {**m["model_kwargs"], "input_tdim": TDIM}
    cfg["data"]["init_args"].update(
        {"root": str(root), "cycle_seconds": 1.0, "batch_size": 4, "num_workers": 0}
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_recipes_have_the_paper_hyperparameters():
    for method in ("ce", "patchmix", "patchmix_cl"):
        cfg = yaml.safe_load((RECIPES / f"{method}.yaml").read_text())
        m, d = cfg["model"]["init_args"], cfg["data"]["init_args"]
        assert cfg["model"]["class_path"] == "sed.tasks.patchmix.PatchMixTask" and m["method"] == method
        assert cfg["trainer"]["max_epochs"] == 50 and d["batch_size"] == 8 and d["classes"] == 4
        assert (m["optimizer"], m["lr"], m["weight_decay"], list(m["betas"])) == (
            "adam",
            5e-5,
            1e-6,
            [0.9, 0.999],
        )
        assert (m["scheduler"], m["min_lr_ratio"], m["ma_update"], m["ma_beta"]) == (
            "cosine",
            1e-3,
            True,
            0.5,
        )
        assert m["pretrained"] == "ast-audioset-0.4593" and m["model_kwargs"]["input_tdim"] == 798
        assert m.get("class_weights") == ("inverse_frequency" if method == "ce" else None)


def test_cli_fit_logs_icbhi_score_and_checkpoint_loads(icbhi_root, tmp_path):
    cfg = _cfg(tmp_path, icbhi_root)
    cli = make_cli(["--config", str(cfg)], run=False)
    assert isinstance(cli.model, PatchMixTask) and cli.model.ma_update and cli.model.method == "patchmix_cl"
    assert cli.model.hparams.num_classes == 4 and cli.model.labels == ["normal", "crackle", "wheeze", "both"]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    result = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best")[0]
    assert {"test_sp", "test_se", "test_score"} <= set(result)
    assert result["test_score"] == pytest.approx((result["test_sp"] + result["test_se"]) / 2, abs=1e-4)
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    vals = [r for r in rows if r.get("val_score")]
    assert len(vals) == 2 and all(r["val_sp"] and r["val_se"] for r in vals)
    best = list((run / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1 and cli.trainer.checkpoint_callback.monitor == "val_score"
    model, desc = load_model(best[0])
    assert desc["labels"] == ["normal", "crackle", "wheeze", "both"]
    wave = cli.datamodule.dataset("test")[0]["wave"][None]
    with torch.no_grad():
        assert model.eval()(wave).shape == (1, 4)


def test_multi_seed_driver_summarizes(icbhi_root, tmp_path, capsys):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("multi_seed", RECIPES / "multi_seed.py")
    ms = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ms)
    cfg = _cfg(tmp_path, icbhi_root, method="ce")
    assert (
        ms.main(
            [
                "--config",
                str(cfg),
                "--seeds",
                "1,2",
                "--root",
                str(tmp_path / "seeds"),
                "--ckpt",
                "last",
                "--trainer.max_epochs=1",
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "seeds" / "seeds.json").read_text())
    assert [r["seed"] for r in data["seeds"]] == [1, 2]
    assert set(data["summary"]) == {"test_sp", "test_se", "test_score"}
    assert (tmp_path / "seeds" / "seed2" / "checkpoints" / "last.ckpt").is_file()
    assert "mean" in capsys.readouterr().out
