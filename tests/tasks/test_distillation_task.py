"""DistillationTask: a cnn_tiny student learns from a two-teacher ensemble on the tiny synthetic corpus."""

import pytest
import torch
import yaml

from sed.errors import CheckpointError
from sed.models.loading import load_model
from sed.tasks.distillation import DistillationTask
from sed.training.lightning_cli import make_cli
from tests.tasks.conftest import write_config

TEACHER_EPOCHS = 15
STUDENT_EPOCHS = 12  # the BatchNorm running statistics of a tiny CNN need a few dozen steps


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny convolutions on a shared CPU run several times faster on one thread than on many
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _fit(cfg, *extra):
    return make_cli(["fit", "--config", str(cfg), *extra])


@pytest.fixture(scope="module")
def teachers(tiny_corpus, tmp_path_factory):
    """Two cnn_tiny teachers (different seeds) trained for a few epochs, saved with save_model."""
    from sed.checkpoint import save_model
    from sed.data.modules.audio import AudioDataModule
    from sed.models import create_model

    folder = tmp_path_factory.mktemp("teachers")
    dm = AudioDataModule(
        source="esc50",
        root=str(tiny_corpus),
        clip_seconds=1.0,
        batch_size=6,
        val_folds=[5],
        test_folds=[5],
        cache_audio=True,
    )
    dm.setup("fit")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = create_model("cnn_tiny", num_classes=dm.num_classes, labels=dm.label_names, clip_seconds=1.0)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(TEACHER_EPOCHS):
            for batch in dm.train_dataloader():
                loss = torch.nn.functional.cross_entropy(
                    model(batch["wave"], lengths=batch["lengths"]), batch["label"]
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
        paths.append(str(save_model(folder / f"teacher{seed}.pt", model.eval(), dm.label_names)))
    return paths


def _student_config(folder, corpus, teachers, **over):
    cfg = write_config(folder, corpus, trainer__max_epochs=STUDENT_EPOCHS, **over)
    data = yaml.safe_load(cfg.read_text())
    data["model"]["class_path"] = "sed.tasks.distillation.DistillationTask"
    data["model"]["init_args"].update(
        teachers=teachers, temperature=4.0, alpha=0.7, teacher_cache=str(folder / "teacher_cache")
    )
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def test_student_learns_from_ensemble_with_cache(teachers, tiny_corpus, tmp_path):
    cli = _fit(_student_config(tmp_path, tiny_corpus, teachers))
    task = cli.model
    assert isinstance(task, DistillationTask) and len(task.teachers) == 2
    n_train = len(cli.datamodule.splits["train"])
    # epoch 1 runs the teachers on every training clip; later epochs read the cache only
    assert task.teacher_forwards == n_train
    assert task.cache_hits == (STUDENT_EPOCHS - 1) * n_train
    assert len(list((tmp_path / "teacher_cache").glob("*.pt"))) == n_train

    ckpt_path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    keys = list(ckpt["state_dict"])
    # only the student (and metric state): the teachers' weights are not in the checkpoint
    assert keys and all(k.startswith(("model.", "metrics.", "train_acc")) for k in keys)
    student = {f"model.{k}" for k in task.model.state_dict()}
    assert {k for k in keys if k.startswith("model.")} == student
    meta = ckpt["sed_meta"]
    assert meta["model_name"] == "cnn_tiny" and meta["distilled_from"]["teachers"] == teachers

    # the student checkpoint classifies alone, above chance (3 classes) on the held-out fold
    from sed.inference.classifier import Classifier

    clf = Classifier.from_pretrained(ckpt_path, device="cpu")
    items = cli.datamodule.splits["val"]
    results = clf.score([it.path for it in items])
    acc = sum(int(r.scores.argmax()) == it.label for r, it in zip(results, items)) / len(items)
    assert acc > 1 / 3 + 0.1, acc


def test_teachers_are_frozen_and_out_of_state_dict(teachers):
    labels = load_model(teachers[0])[1]["labels"]
    task = DistillationTask(
        teachers=teachers,
        model_name="cnn_tiny",
        model_kwargs={"clip_seconds": 1.0},
        num_classes=len(labels),
        labels=labels,
    )
    assert all(not p.requires_grad for t in task.teachers for p in t.parameters())
    assert all(not t.training for t in task.teachers)
    own = {id(p) for p in task.parameters()}
    assert not any(id(p) in own for t in task.teachers for p in t.parameters())
    assert all(k.startswith(("model.", "metrics.", "train_acc")) for k in task.state_dict())
    # the ensemble soft target is the mean of the softened teacher probabilities
    wave = torch.randn(2, 16000)
    logits = task.teacher_logits({"wave": wave, "lengths": torch.tensor([16000, 16000]), "path": ["a", "b"]})
    assert logits.shape == (2, 2, len(labels))
    assert task.teacher_forwards == 2


def test_teacher_with_other_labels_is_refused(teachers):
    with pytest.raises(CheckpointError, match="labels"):
        DistillationTask(teachers=teachers, model_name="cnn_tiny", num_classes=3, labels=["x", "y", "z"])
    with pytest.raises(ValueError, match="at least one teacher"):
        DistillationTask(teachers=[], model_name="cnn_tiny", num_classes=3)


def test_cache_is_off_for_random_training_crops(teachers, tiny_corpus, tmp_path):
    # 0.5-s random crops of 1-s clips: the teacher input changes every epoch, so nothing is cached
    cfg = _student_config(
        tmp_path, tiny_corpus, teachers, data__clip_seconds=0.5, model__model_kwargs={"clip_seconds": 0.5}
    )
    with pytest.warns(UserWarning, match="teacher_cache is off"):
        cli = _fit(cfg, "--trainer.max_epochs=2", "--trainer.limit_val_batches=0")
    n_train = len(cli.datamodule.splits["train"])
    assert cli.model.teacher_forwards == 2 * n_train and cli.model.cache_hits == 0
    assert not list((tmp_path / "teacher_cache").glob("*.pt"))


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_teacher_at_another_rate_sees_the_batch_resampled(tmp_path):
    """A 16 kHz teacher distils into a 32 kHz student: the teacher gets each batch resampled to 16 kHz."""
    import torchaudio

    from sed.checkpoint import save_model
    from sed.models import create_model

    labels = ["a", "b", "c"]
    torch.manual_seed(0)
    teacher = create_model("cnn_tiny", num_classes=3, labels=labels, clip_seconds=1.0).eval()
    path = save_model(tmp_path / "t16k.pt", teacher, labels)
    task = DistillationTask(
        teachers=[str(path)],
        model_name="cnn_tiny",
        num_classes=3,
        labels=labels,
        model_kwargs={"clip_seconds": 1.0, "sample_rate": 32000},
    )
    assert task.model.sample_rate == 32000 and task.teacher_rates == [16000]
    seen = []
    task.teachers[0].register_forward_pre_hook(lambda m, args, kw: seen.append((args, kw)), with_kwargs=True)
    wave, lengths = 0.1 * torch.randn(2, 32000), torch.tensor([32000, 20001])
    logits = task.teacher_logits({"wave": wave, "lengths": lengths, "path": ["a", "b"]})
    (got,), kw = seen[0]
    expected = torchaudio.functional.resample(wave, 32000, 16000)
    assert got.shape == (2, 16000) and torch.allclose(got, expected)
    assert kw["lengths"].tolist() == [16000, 10001]
    with torch.no_grad():
        assert torch.allclose(logits[0], task.teachers[0](expected, lengths=torch.tensor([16000, 10001])))
    batch = {"wave": wave, "lengths": lengths, "label": torch.tensor([0, 2]), "path": ["a", "b"]}
    loss = task.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and task.model.head[1].weight.grad is not None
