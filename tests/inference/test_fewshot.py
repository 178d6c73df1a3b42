"""Few-shot enrolment (sedkit enroll), the episodic evaluation (sedkit fewshot-eval) and their errors."""

import json
import shutil

import numpy as np
import pytest
import torch

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.data.corpora.esc50 import esc50_items
from sed.data.synth.corpora import make_esc50
from sed.errors import DatasetError
from sed.inference.classifier import Classifier
from sed.inference.fewshot import enroll
from sed.models import create_model, load_model
from sed.training.fewshot_eval import fewshot_eval, sample_episodes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """10 synthetic classes x 10 clips of 1 s; a random-weight cnn_tiny backbone; support sets of
    classes 5-9 (5 shots each: clips 0-4), the other 5 clips of each as queries."""
    root = tmp_path_factory.mktemp("fs")
    make_esc50(root / "esc", seed=0, num_classes=10, clips_per_class=10, duration=1.0, sample_rate=16000)
    items, names = esc50_items(root / "esc")
    torch.manual_seed(0)
    backbone = save_model(root / "backbone.pt", create_model("cnn_tiny", num_classes=5, clip_seconds=1.0))
    queries = []
    for k in range(5, 10):
        clips = [it for it in items if it.label == k]
        half = "a" if k < 8 else "b"  # two support folders: classes 5-7, then 8-9 (for --add)
        (root / f"support_{half}" / names[k]).mkdir(parents=True)
        for it in clips[:5]:
            shutil.copy(it.path, root / f"support_{half}" / names[k])
        queries += [(it.path, names[k]) for it in clips[5:]]
    return root, backbone, queries


def _accuracy(model, queries) -> float:
    clf = Classifier(model, {"sample_rate": model.sample_rate, "clip_samples": model.clip_samples})
    rows = clf.predict([q for q, _ in queries], top_k=1)
    return float(np.mean([r["top_k"][0]["label"] == label for r, (_, label) in zip(rows, queries)]))


def test_prototypes_are_the_mean_support_embeddings(corpus):
    root, backbone, _ = corpus
    model, report = enroll(root / "support_a", backbone, shots=3, seed=1)
    clf = Classifier.from_pretrained(backbone)
    for k, name in enumerate(report.classes):
        files = report.files[name]
        assert len(files) == 3
        emb, _ = clf.embed(
            files, window=clf.clip_samples / clf.sample_rate
        )  # as enroll embeds (1-s files, 0.995-s clip)
        assert torch.allclose(model.prototypes[k], torch.from_numpy(emb.mean(0)), atol=1e-5)
    again, report2 = enroll(root / "support_a", backbone, shots=3, seed=1)
    assert report2.files == report.files and torch.equal(again.prototypes, model.prototypes)


def test_five_shot_enrolment_of_held_out_classes_is_well_above_chance(corpus, tmp_path):
    root, backbone, queries = corpus
    support = tmp_path / "support"
    shutil.copytree(root / "support_a", support)
    shutil.copytree(root / "support_b", support, dirs_exist_ok=True)
    for metric in ("cosine", "euclidean"):
        model, _ = enroll(support, backbone, metric=metric, shots=5)
        acc = _accuracy(model, queries)
        assert acc >= 0.5, (metric, acc)  # chance is 0.2 (measured: cosine 0.76, euclidean 0.60)


def test_add_keeps_the_old_classes_scores(corpus, tmp_path):
    root, backbone, queries = corpus
    code = main(
        ["enroll", str(root / "support_a"), "--checkpoint", str(backbone), "--out", str(tmp_path / "a.pt")]
    )
    assert code == 0
    code = main(
        [
            "enroll",
            str(root / "support_b"),
            "--checkpoint",
            str(tmp_path / "a.pt"),
            "--add",
            "--out",
            str(tmp_path / "ab.pt"),
        ]
    )
    assert code == 0
    a, _ = load_model(tmp_path / "a.pt")
    ab, desc = load_model(tmp_path / "ab.pt")
    assert desc["labels"][:3] == a.labels and len(desc["labels"]) == 5
    assert torch.equal(ab.prototypes[:3], a.prototypes)
    wave = torch.randn(4, 16000) * 0.1
    with torch.no_grad():
        # old classes' logits unchanged (to float32 rounding: a wider matrix product sums in another order)
        assert torch.allclose(ab(wave)[:, :3], a(wave), rtol=0, atol=1e-5)
    with pytest.raises(DatasetError, match="already enrolled"):
        enroll(root / "support_a", add_to=tmp_path / "ab.pt")


def test_enrolled_checkpoint_classifies_like_any_other(corpus, tmp_path, capsys):
    root, backbone, queries = corpus
    out = tmp_path / "p.pt"
    assert (
        main(
            [
                "enroll",
                str(root / "support_a"),
                "--checkpoint",
                str(backbone),
                "--out",
                str(out),
                "--open-set",
                "0.2",
            ]
        )
        == 0
    )
    capsys.readouterr()
    files = [q for q, _ in queries[:3]]
    assert main(["classify", *files, "--checkpoint", str(out), "--top-k", "2", "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all(len(r["top_k"]) == 2 for r in rows)
    assert main(["classify", files[0], "--checkpoint", str(out), "--window", "0.5", "--format", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r.get("start"), r.get("end")) for r in lines] == [(0.0, 0.5), (0.5, 1.0), (None, None)]
    assert (
        main(
            [
                "classify",
                files[0],
                "--checkpoint",
                str(out),
                "--checkpoint",
                str(out),
                "--ensemble",
                "average",
                "--format",
                "json",
            ]
        )
        == 0
    )
    ens = json.loads(capsys.readouterr().out.splitlines()[0])
    assert ens["top_k"][0]["label"] == rows[0]["top_k"][0]["label"]


def test_open_set_answers_unknown_for_a_foreign_sound(corpus):
    root, backbone, _ = corpus
    model, _ = enroll(root / "support_a", backbone, open_set=0.9999)
    assert model.labels[-1] == "unknown"
    with torch.no_grad():
        logits = model(torch.randn(1, 16000))  # white noise: no class is that similar
    assert model.labels[int(logits.argmax())] == "unknown"


def test_short_classes_are_one_error_listing_every_one(corpus, tmp_path):
    root, backbone, _ = corpus
    support = tmp_path / "s"
    shutil.copytree(root / "support_a", support)
    names = sorted(p.name for p in support.iterdir())
    for f in list((support / names[0]).iterdir())[1:]:  # 1 usable file left
        f.unlink()
    for f in (support / names[1]).iterdir():  # only an unreadable file
        f.write_bytes(b"RIFF not audio")
    with pytest.raises(DatasetError) as err:
        enroll(support, backbone, shots=2)
    msg = str(err.value)
    assert "\n" not in msg and "2 class(es) have fewer than 2 usable file(s)" in msg
    assert f"'{names[0]}' (1 usable of 1 files)" in msg and f"'{names[1]}' (0 usable of 5 files)" in msg


def test_bad_files_are_reported_and_skipped(corpus, tmp_path, capsys):
    root, backbone, _ = corpus
    support = tmp_path / "s"
    shutil.copytree(root / "support_a", support)
    bad = support / sorted(p.name for p in support.iterdir())[0] / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00")
    code = main(["enroll", str(support), "--checkpoint", str(backbone), "--out", str(tmp_path / "p.pt")])
    err = capsys.readouterr().err
    assert code == 1 and "broken.wav" in err and (tmp_path / "p.pt").is_file()
    model, desc = load_model(tmp_path / "p.pt")
    assert desc["fewshot"]["files_per_class"][bad.parent.name] == 5 and desc["fewshot"]["skipped"] == 1


def test_episodes_are_reproducible_and_disjoint():
    labels = np.repeat(np.arange(6), 8)
    a = sample_episodes(labels, ways=3, shots=2, queries=4, episodes=20, seed=7)
    b = sample_episodes(labels, ways=3, shots=2, queries=4, episodes=20, seed=7)
    c = sample_episodes(labels, ways=3, shots=2, queries=4, episodes=20, seed=8)
    assert all(
        np.array_equal(x.support, y.support) and np.array_equal(x.query, y.query) for x, y in zip(a, b)
    )
    assert any(not np.array_equal(x.support, y.support) for x, y in zip(a, c))
    for ep in a:
        assert not set(ep.support.ravel()) & set(ep.query.ravel())
        assert len(set(ep.classes)) == 3
        for k, cls in enumerate(ep.classes):
            assert (labels[ep.support[k]] == cls).all() and (labels[ep.query[k]] == cls).all()
    with pytest.raises(ValueError, match="need 3 classes of at least 9 clips"):
        sample_episodes(labels, ways=3, shots=5, queries=4, episodes=1)


def test_fewshot_eval_on_separable_embeddings():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 10)
    emb = np.eye(5)[labels] * 3 + rng.normal(scale=0.1, size=(50, 5))
    table = fewshot_eval(emb, labels, ways=3, shots=2, queries=3, episodes=10, seed=0)
    assert [r["method"] for r in table["methods"]] == ["prototype_cosine", "prototype_euclidean", "logistic"]
    assert all(r["mean"] == 1.0 and r["ci95"] == 0.0 for r in table["methods"])


def test_fewshot_eval_cli(corpus, tmp_path, capsys):
    root, backbone, _ = corpus
    cfg = tmp_path / "data.yaml"
    cfg.write_text(
        f"data:\n  class_path: sed.data.modules.audio.AudioDataModule\n  init_args:\n"
        f"    source: esc50\n    root: {root / 'esc'}\n    clip_seconds: 1.0\n"
    )
    out = tmp_path / "fs.json"
    code = main(
        [
            "fewshot-eval",
            "--checkpoint",
            str(backbone),
            "--data",
            str(cfg),
            "--split",
            "all",
            "--ways",
            "5",
            "--shots",
            "1",
            "--queries",
            "5",
            "--episodes",
            "20",
            "--seed",
            "3",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "5-way 1-shot" in text and "logistic probe" in text
    table = json.loads(out.read_text())
    assert table["clips"] == 100 and len(table["methods"][0]["accuracies"]) == 20
    assert all(r["mean"] > 0.3 for r in table["methods"])  # chance 0.2


def test_enrolled_checkpoint_exports_to_onnx(corpus, tmp_path):
    import onnxruntime as ort

    from sed.export.onnx import export_checkpoint

    root, backbone, _ = corpus
    model, _ = enroll(root / "support_a", backbone, metric="euclidean", open_set=5000.0)
    path = save_model(tmp_path / "p.pt", model)
    export_checkpoint(path, tmp_path / "p.onnx")
    session = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    wave = torch.randn(2, 16000) * 0.1
    logits = session.run(["logits"], {"waveform": wave.numpy()})[0]
    with torch.no_grad():
        ref = model(wave).numpy()
    assert logits.shape == (2, 4) and np.abs(logits - ref).max() < 1e-4  # measured 5e-10
    assert Classifier.from_pretrained(tmp_path / "p.onnx").labels == model.labels
