"""Every clip-model family goes everywhere: classify (clip, window), embed, ensembles across families (and
sample rates), few-shot enrolment; every trainable one (:func:`is_trainable_clip_model`) also every transfer
mode, distillation teacher and student.

One test size per family, at its declared test kwargs (``family_test_sizes``, ``tiny_kwargs``: a 1-s clip,
tiny widths): a family's sizes share its code. No hand list: a new family is covered when it registers."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.inference.classifier import Classifier
from sed.models import create_model
from sed.models.base import is_clip_model, is_trainable_clip_model
from sed.models.family import family_test_sizes, tiny_kwargs
from sed.models.frames import is_frame_model
from sed.tasks import ClassificationTask, ProbeTask
from sed.tasks.distillation import DistillationTask

LABELS = ["a", "b", "c"]


def _sizes(kind) -> list[str]:
    with torch.device("meta"):
        return [n for n in family_test_sizes() if kind(create_model(n, **tiny_kwargs(n)))]


#: one test size per clip-model family (a prototype classifier included), and those a training task drives
CLIP, TRAINABLE = _sizes(is_clip_model), _sizes(is_trainable_clip_model)
#: the families whose test size is a frame model (the CRNN): multi-label by construction
FRAMES = _sizes(is_frame_model)


@pytest.fixture(autouse=True)
def _no_denormals():
    torch.set_flush_denormal(True)  # random-weight MobileNets make denormals, 100x slower on CPUs
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    out = {}
    for name in CLIP:
        torch.manual_seed(0)
        model = create_model(name, num_classes=3, labels=LABELS, **tiny_kwargs(name))
        out[name] = save_model(root / f"{name}.pt", model)
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(root / f"clip{i}.wav", rng.uniform(-0.3, 0.3, 24000).astype(np.float32), 22050)
    return root, out


def test_every_family_is_covered():
    assert {"ast_micro", "beats_micro", "ced_tiny", "efficientat_mn04", "cnn_tiny", "tcn_tiny"} <= set(
        TRAINABLE
    )
    assert set(TRAINABLE) < set(CLIP)  # the prototype classifier: classified with, not trained


@pytest.mark.parametrize("name", CLIP)
def test_classify_clip_window_and_embed(ckpts, name, capsys):
    root, paths = ckpts
    files = [str(root / "clip0.wav"), str(root / "clip1.wav")]
    assert (
        main(["classify", *files, "--checkpoint", str(paths[name]), "--format", "json", "--top-k", "3"]) == 0
    )
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [sorted(t["label"] for t in r["top_k"]) for r in rows] == [LABELS, LABELS]
    clf = Classifier.from_pretrained(paths[name])
    wave = torch.from_numpy(sf.read(files[0], dtype="float32")[0])
    scored = clf.score([("x", wave)])[0].scores  # the file at 22.05 kHz: resampled to the model's rate
    assert scored.shape == (3,) and np.isfinite(scored).all()
    assert (
        main(["classify", files[0], "--checkpoint", str(paths[name]), "--window", "0.5", "--format", "json"])
        == 0
    )
    assert len(capsys.readouterr().out.splitlines()) == 4  # 0-0.5, 0.5-1.0, 1.0-1.09 s + the aggregate
    emb, results = clf.embed(files)
    assert emb.shape == (2, clf.model.embed_dim) and not any(r.error for r in results)


@pytest.mark.parametrize("name", TRAINABLE)
@pytest.mark.parametrize("mode", ["all", "head", "frozen", "last_n", "probe"])
def test_every_transfer_mode_trains_a_step(name, mode):
    torch.manual_seed(0)
    common = dict(model_name=name, model_kwargs=tiny_kwargs(name), num_classes=3, labels=LABELS)
    task = (
        ProbeTask(**common)
        if mode == "probe"
        else ClassificationTask(**common, transfer=mode, finetune_blocks=1)
    )
    n = task.model.clip_samples
    batch = {
        "wave": torch.randn(4, n) * 0.1,
        "lengths": torch.full((4,), n),
        "label": torch.tensor([0, 1, 2, 0]),
    }
    trainable = {k for k, p in task.model.named_parameters() if p.requires_grad}
    heads = {k for k in trainable if k.startswith("head.")}
    if mode == "probe":
        assert task.training_step(batch, 0) is None and len(task.probe_cache.rows) == 4
        if is_frame_model(task.model):  # its head pools frames: no Linear on the embedding to fit
            with pytest.raises(ValueError, match="a probe fits a head ending in nn.Linear"):
                task._fit_probe()
            return
        task._fit_probe()
        assert task.probe_train_acc == 1.0  # 4 clips, a linear probe on a 2-D+ embedding separates them
        return
    loss = task.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    grads = {k for k, p in task.model.named_parameters() if p.grad is not None}
    assert grads == trainable
    if mode in ("head", "frozen"):
        assert trainable == heads
    elif mode == "last_n":
        assert heads < trainable < {k for k, _ in task.model.named_parameters()}
    else:
        assert trainable == {k for k, _ in task.model.named_parameters()}


def test_ensemble_across_families_and_rates(ckpts, capsys):
    root, paths = ckpts
    # a frame model (the CRNN) scores each class with a sigmoid: it joins no single-label ensemble
    frames = [n for n in paths if n in FRAMES]
    assert (
        frames
        and main(
            [
                "classify",
                str(root / "clip0.wav"),
                *[a for n in (CLIP[0], frames[0]) for a in ("--checkpoint", str(paths[n]))],
                "--ensemble",
                "average",
            ]
        )
        == 2
    )
    assert "multi-label" in capsys.readouterr().err
    paths = {n: p for n, p in paths.items() if n not in FRAMES}
    members = [a for p in paths.values() for a in ("--checkpoint", str(p))]
    assert (
        main(["classify", str(root / "clip0.wav"), *members, "--ensemble", "average", "--format", "json"])
        == 0
    )
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    singles = [
        Classifier.from_pretrained(p).score([str(root / "clip0.wav")])[0].scores for p in paths.values()
    ]
    mean = np.mean(singles, axis=0)
    assert {t["label"]: t["score"] for t in row["top_k"]} == pytest.approx(dict(zip(LABELS, mean)), abs=1e-5)


@pytest.mark.parametrize("student", TRAINABLE)
def test_distillation_between_families(ckpts, student):
    """Each family teaches the next one once (EfficientAT's 32 kHz teaches and learns from 16 kHz models)."""
    _, paths = ckpts
    # the family before it that is a single-label clip classifier, as the data (a frame model is multi-label)
    single = [n for n in TRAINABLE if n not in FRAMES or n == student]
    teacher = next(n for n in reversed(single[: single.index(student)] or single) if n not in FRAMES)
    torch.manual_seed(0)
    task = DistillationTask(
        teachers=[str(paths[teacher])],
        model_name=student,
        model_kwargs=tiny_kwargs(student),
        num_classes=3,
        labels=LABELS,
    )
    n = task.model.clip_samples
    batch = {
        "wave": torch.randn(2, n) * 0.1,
        "lengths": torch.full((2,), n),
        "label": torch.tensor([0, 2]),
        "path": ["x", "y"],
    }
    loss = task.training_step(batch, 0)
    assert torch.isfinite(loss) and task.teacher_forwards == 2


@pytest.mark.parametrize("name", CLIP)
def test_enrol_on_a_family_backbone(ckpts, tmp_path, name):
    root, paths = ckpts
    for k, cls in enumerate(("dog", "cat")):
        (tmp_path / cls).mkdir()
        sf.write(tmp_path / cls / "x.wav", np.random.default_rng(k).uniform(-0.3, 0.3, 16000), 16000)
    assert (
        main(["enroll", str(tmp_path), "--checkpoint", str(paths[name]), "--out", str(tmp_path / "p.pt")])
        == 0
    )
    assert Classifier.from_pretrained(tmp_path / "p.pt").labels == ["cat", "dog"]


def test_another_familys_checkpoint_is_refused_by_ast(tmp_path):
    torch.manual_seed(0)
    ced = create_model("ced_tiny", num_classes=3, **tiny_kwargs("ced_tiny"))
    path = tmp_path / "ced_state.pt"
    torch.save(ced.state_dict(), path)  # a bare state dict of sed's CED: claimed by the CED importer
    from sed.errors import CheckpointError

    with pytest.raises(CheckpointError, match="is a CED checkpoint, not an AST one") as err:
        create_model("ast_micro", pretrained=str(path))
    assert "\n" not in str(err.value)


def test_a_foreign_file_is_read_once(tmp_path, monkeypatch):
    from sed.models import load_model
    from sed.models.pretrained import sources

    torch.manual_seed(0)
    path = tmp_path / "ced_state.pt"
    torch.save(create_model("ced_tiny", num_classes=3, **tiny_kwargs("ced_tiny")).state_dict(), path)
    reads = []
    real = sources.read_checkpoint
    monkeypatch.setattr(sources, "read_checkpoint", lambda p: reads.append(p) or real(p))
    model, desc = load_model(path)  # sed description? which family? build: one read for all three
    assert desc["model_name"] == "ced_tiny" and len(reads) == 1
