"""Acceptance of the detection task: a tiny frame model trained on a tiny synthetic corpus (strong, weak and
unlabelled clips of tones at known times) finds the events of held-out files within one output frame."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from scipy.ndimage import median_filter
from torch.utils.data import DataLoader

from sed.data.synth.desed import make_desed
from sed.errors import UsageError
from sed.models.family import family
from sed.tasks.detection import DetectionTask
from sed.training.lightning_cli import make_cli
from tests.tasks.detection_helpers import fake_create_model, make_batch, one_thread, random_events  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("one_thread")
SECONDS = 2.0
CONFIG = Path(__file__).resolve().parents[2] / "recipes" / "common" / "detection.yaml"
CRNN_TEST = family("crnn").test_kwargs  # the CRNN's test size (time pooled by 4: 64 ms frames)


def _corpus(seed: int, batches: int, sources: list[int]) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for b in range(batches):
        events = [random_events(gen, SECONDS) for _ in sources]
        out.append(make_batch(events, sources, SECONDS, seed=seed * 1000 + b))
    return out


def _events(probs: torch.Tensor, threshold: float = 0.5) -> set[tuple[int, int, int]]:
    """(first frame, end frame, class) of each run of frames above ``threshold`` after a 3-frame median
    filter (as the baseline's post-processing)."""
    out = set()
    smooth = torch.from_numpy(median_filter(probs.numpy(), size=(3, 1)))
    active = (smooth > threshold).int()
    for c in range(probs.shape[1]):
        edges = torch.diff(torch.nn.functional.pad(active[:, c], (1, 1)))
        starts, ends = torch.nonzero(edges == 1).flatten(), torch.nonzero(edges == -1).flatten()
        out |= {(int(a), int(b), c) for a, b in zip(starts, ends)}
    return out


def test_tiny_model_finds_held_out_events_within_one_frame(monkeypatch, tmp_path):
    monkeypatch.setattr("sed.models.create_model", fake_create_model)
    pl.seed_everything(0, workers=True)
    train = _corpus(0, 10, [0] * 8 + [1] * 4 + [2] * 4)  # strong | weak | unlabelled
    task = DetectionTask(  # hard mixup: soft targets of mixed tones teach the tiny model to lower one
        # class where another sounds (events then break up where they overlap)
        model_name="tiny",
        model_kwargs={"dim": 32},
        num_classes=3,
        labels=["low", "mid", "high"],
        lr=0.01,
        warmup_epochs=5,
        mixup="hard",
        median_filter=0.096,  # 3 frames, as the events below are read
    )
    trainer = pl.Trainer(
        max_epochs=30,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        gradient_clip_val=5.0,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, DataLoader(train, batch_size=None, shuffle=True))
    assert trainer.global_step == 300 and task.steps_per_epoch == 10

    held_out = _corpus(1, 1, [0] * 12)[0]
    task.eval()
    hop = task.model.frame_hop
    with torch.no_grad():
        frames, _ = task.model.forward_frames(held_out["wave"], held_out["lengths"])
    found, missed = 0, []
    for i in range(12):
        predicted = _events(frames[i])
        truth = [tuple(e) for e in held_out["events"][i].tolist() if e[2] >= 0]
        assert len(predicted) == len(truth), (i, predicted, truth)
        for onset, offset, c in truth:
            hit = [
                p
                for p in predicted
                if p[2] == int(c) and abs(p[0] * hop - onset) <= hop and abs(p[1] * hop - offset) <= hop
            ]
            found += bool(hit)
            if not hit:
                missed.append((i, onset, offset, c, predicted))
    assert not missed, missed
    assert found >= 12

    # validation scores the held-out strong clips with sed_scores_eval (student and teacher)
    evaluator = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    metrics = evaluator.validate(task, DataLoader([held_out], batch_size=None), verbose=False)[0]
    assert metrics["val_intersection_f1"] == pytest.approx(1.0)
    assert metrics["val_psds1"] > 0.8
    assert metrics["val_obj"] == metrics["val_intersection_f1"]  # no weak clips validated
    assert 0.0 <= metrics["val_teacher_psds1"] <= 1.0 and "val_teacher_intersection_f1" in metrics


def test_sedkit_fit_and_test_with_the_detection_config(tmp_path):
    """recipes/common/detection.yaml with the CRNN's test size on the synthetic DESED corpus (2 steps,
    validation, test)."""
    corpus = make_desed(tmp_path / "desed", seed=0, num_classes=3, clips=4, duration=2.0)
    run = tmp_path / "run"
    common = [
        "--config",
        str(CONFIG),
        f"--model.init_args.model_kwargs={json.dumps({**CRNN_TEST, 'frame_pooling': 'attention'})}",
        f"--data.init_args.root={corpus['root']}",
        f"--data.init_args.labels={json.dumps(corpus['classes'])}",
        "--data.init_args.clip_seconds=2.0",
        "--data.init_args.batch_sizes=[2, 2, 2]",
        "--data.init_args.eval_batch_size=4",
        "--data.init_args.num_workers=0",
        f"--trainer.default_root_dir={run}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    make_cli(["fit", *common, "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1"])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2  # 4 strong clips in batches of 2: one epoch
    meta = ckpt["sed_meta"]
    assert meta["task"] == "detection" and meta["frame_hop"] == pytest.approx(256 * 4 / 16000)
    assert meta["labels"] == corpus["classes"] and meta["multi_label"] is True
    fit = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in ("val_psds1", "val_intersection_f1", "val_obj", "val_teacher_psds1", "train_consistency"):
        assert name in fit
    make_cli(["test", *common, f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    tested = (run / "test_metrics.csv").read_text().splitlines()[0].split(",")
    assert "test_psds1" in tested and "test_collar_f1" in tested
    rows = Path(corpus["test_durations"]).read_text().splitlines()[1:]
    test_files = sorted(Path(r.split("\t")[0]).stem for r in rows)
    written = sorted(p.stem for p in (run / "test_scores").glob("*.tsv"))
    assert written == test_files and len(written) == 4
    header = (run / "test_scores" / f"{written[0]}.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["onset", "offset", *corpus["classes"]]


def test_a_detection_configuration_mistake_is_one_usage_line(monkeypatch, tmp_path):
    monkeypatch.setattr("sed.models.create_model", fake_create_model)
    corpus = make_desed(tmp_path / "desed", seed=0, num_classes=3, clips=2, duration=2.0, sample_rate=8000)
    args = ["fit", "--config", str(CONFIG), "--model.init_args.model_name=tiny"]
    args += [
        f"--data.init_args.root={corpus['root']}",
        f"--data.init_args.labels={json.dumps(corpus['classes'])}",
    ]
    with pytest.raises(UsageError) as err:
        make_cli([*args, "--model.init_args.mixup=loud"])
    assert str(err.value) == "mixup must be soft, hard or null, got 'loud'"
