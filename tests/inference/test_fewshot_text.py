"""Text prototypes in enrolment (``sedkit enroll --text``) on a tiny random CLAP in the Hugging Face layout:
text alone equals the zero-shot classifier and transformers' pipeline, text and audio are the stated
combination (computed here by hand), ``--add`` keeps the old classes, the record says where each came from."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from sed.checkpoint import describe, save_model
from sed.cli.main import main
from sed.inference.classifier import Classifier
from sed.inference.fewshot import enroll
from sed.inference.fewshot_text import parse_text
from sed.models.loading import load_model
from sed.models.zeroshot import clap_text, zero_shot_classifier
from tests.models.clap_dir import make_clap_dir

RATE = 16000  # the small CLAP directory's rate (1-s clips)


def _tone(freq: float, seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.05
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small CLAP directory, another one (other weights), a support folder (cat, dog: 2 clips each of
    0.8 s) and two query clips."""
    root = tmp_path_factory.mktemp("fstext")
    clap = make_clap_dir(root / "clap", small=True, seed=0)
    other = make_clap_dir(root / "other", small=True, seed=1)
    for k, (name, freq) in enumerate([("cat", 700.0), ("dog", 220.0)]):
        (root / "support" / name).mkdir(parents=True)
        for i in range(2):
            sf.write(root / "support" / name / f"{i}.wav", _tone(freq * (1 + 0.1 * i), 0.8, 10 * k + i), RATE)
    queries = []
    for i, freq in enumerate((300.0, 900.0)):
        sf.write(root / f"q{i}.wav", _tone(freq, 0.8, 100 + i), RATE)
        queries.append(str(root / f"q{i}.wav"))
    return root, clap, other, queries


def _embed_files(clap, files) -> torch.Tensor:
    clf = Classifier.from_pretrained(clap, need_classes=False, device="cpu")
    emb, results = clf.embed(files, window=clf.clip_samples / clf.sample_rate)
    assert all(r.error is None for r in results)
    return torch.from_numpy(emb)


def test_text_alone_is_the_zero_shot_classifier_and_the_pipeline(setup, tmp_path, capsys):
    from transformers import pipeline

    root, clap, _, queries = setup
    out = tmp_path / "zs.pt"
    code = main(["enroll", "--checkpoint", str(clap), "--text", "dog=a dog barking", "--text", "siren"]
                + ["--out", str(out)])  # fmt: skip
    assert code == 0 and "dog text, siren text" in capsys.readouterr().err
    text = {"dog": ["a dog barking"], "siren": ["This is a sound of siren."]}  # a label alone: the template
    got = Classifier.from_pretrained(out, device="cpu").score(queries)
    zs = zero_shot_classifier(clap, descriptions=text)
    ref = Classifier(zs, describe(zs), device="cpu").score(queries)
    pipe = pipeline("zero-shot-audio-classification", model=str(clap))
    for path, g, r in zip(queries, got, ref):
        np.testing.assert_allclose(g.scores, r.scores, atol=1e-6)
        audio = sf.read(path, dtype="float32")[0]
        descriptions = [d[0] for d in text.values()]
        answer = pipe(audio, candidate_labels=descriptions, hypothesis_template="{}")
        scores = {d["label"]: d["score"] for d in answer}
        np.testing.assert_allclose(g.scores, [scores[d] for d in descriptions], atol=1e-5)
    model, desc = load_model(out)
    assert model.head.scale == pytest.approx(clap_text(clap).scale)  # exp(logit_scale_a), not 10
    assert desc["fewshot"]["classes"] == {
        "dog": {"from": "text", "files": 0, "texts": ["a dog barking"]},
        "siren": {"from": "text", "files": 0, "texts": ["This is a sound of siren."]},
    }
    assert desc["fewshot"]["text_source"] == str(clap) and desc["labels"] == ["dog", "siren"]


def test_several_descriptions_of_a_class_are_averaged_as_text_prototypes_does(setup):
    _, clap, _, queries = setup
    text = parse_text(["dog=a dog barking", "dog=woof woof", "cat=a cat"])
    assert text == {"dog": ["a dog barking", "woof woof"], "cat": ["a cat"]}
    model, report = enroll(None, clap, text=text)
    enc = clap_text(clap).encode(["a dog barking", "woof woof", "a cat"])
    expected = torch.stack([F.normalize(enc[:2].mean(0), dim=-1), enc[2]])
    torch.testing.assert_close(model.prototypes, expected, atol=1e-6, rtol=0)
    assert report.sources == {"dog": "text", "cat": "text"} and report.files == {}
    x = torch.from_numpy(np.stack([sf.read(q, dtype="float32")[0] for q in queries]))
    with torch.no_grad():
        torch.testing.assert_close(model(x), zero_shot_classifier(clap, descriptions=text)(x))


def test_text_and_audio_are_the_stated_combination(setup, tmp_path):
    root, clap, _, _ = setup
    model, report = enroll(
        root / "support", clap, text={"dog": ["a dog"], "bird": ["a bird singing"]}, text_weight=0.3
    )
    assert model.labels == ["cat", "dog", "bird"]  # the support's classes, then those of text alone
    enc = clap_text(clap).encode(["a dog", "a bird singing"])  # unit rows
    cat = _embed_files(clap, report.files["cat"]).double().mean(0).float()
    dog = _embed_files(clap, report.files["dog"]).double().mean(0).float()
    dog_both = 0.3 * enc[0] / enc[0].norm() + 0.7 * dog / dog.norm()
    expected = torch.stack([cat, dog_both, enc[1]])
    torch.testing.assert_close(model.prototypes, expected, atol=1e-6, rtol=0)
    assert model.head.scale == pytest.approx(clap_text(clap).scale) and model.metric == "cosine"
    record = report.summary(root / "support")
    assert record["classes"] == {
        "cat": {"from": "audio", "files": 2},
        "dog": {"from": "text+audio", "files": 2, "texts": ["a dog"], "text_weight": 0.3},
        "bird": {"from": "text", "files": 0, "texts": ["a bird singing"]},
    }
    assert record["text_weight"] == 0.3
    audio_only, r = enroll(root / "support", clap)  # today's enrolment, unchanged: scale 10, raw means
    assert (
        audio_only.head.scale == 10.0
        and r.text_weight is None
        and r.sources == {"cat": "audio", "dog": "audio"}
    )
    torch.testing.assert_close(audio_only.prototypes, torch.stack([cat, dog]), atol=1e-6, rtol=0)


def test_add_text_classes_to_an_audio_checkpoint(setup, tmp_path, capsys):
    root, clap, other, _ = setup
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    assert main(["enroll", str(root / "support"), "--checkpoint", str(clap), "--out", str(a)]) == 0
    add = ["enroll", "--add", "--checkpoint", str(a), "--text", "bird=a bird singing", "--out", str(b)]
    capsys.readouterr()
    assert main(add) == 2 and not b.exists()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds no text tower" in err and "--text-from" in err
    assert main([*add, "--text-from", str(other)]) == 2 and not b.exists()  # another CLAP's weights
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"is not on the audio tower of {other}" in err
    assert main([*add, "--text-from", str(clap)]) == 0
    old, new = load_model(a), load_model(b)
    assert new[0].labels == ["cat", "dog", "bird"] and new[0].head.scale == old[0].head.scale == 10.0
    assert torch.equal(new[0].prototypes[:2], old[0].prototypes)  # the old classes bit for bit
    torch.testing.assert_close(new[0].prototypes[2], clap_text(clap).encode(["a bird singing"])[0])
    classes = new[1]["fewshot"]["classes"]
    assert classes["cat"] == {"from": "audio", "files": 2} and classes["bird"]["from"] == "text"
    assert (
        main([*add[:-2], "--text", "cat=a cat", "--text-from", str(clap), "--out", str(tmp_path / "c.pt")])
        == 2
    )
    assert "already enrolled" in capsys.readouterr().err


def test_a_label_alone_is_the_template_of_it():
    assert parse_text(["siren", "siren=a siren wailing"], "A {} outside.") == {
        "siren": ["A siren outside.", "a siren wailing"]
    }
    assert parse_text(["eq=a=b"]) == {"eq": ["a=b"]}  # the first '=' ends the label
    for bad, message in [
        (["=a dog"], "names no label"),
        (["dog="], "empty description"),
        (["dog=x", "dog=x"], "given twice"),
        ([], "at least one"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_text(bad)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text-weight", "0.3"], "--text-weight needs --text"),
        (["--template", "A {}."], "--template needs --text"),
        ([], "give SUPPORT"),
        (["--text", "x", "--template", "no slot"], "exactly one {}"),
        (["--text", "x", "--metric", "euclidean"], "text prototypes compare by cosine"),
        (["--text", "x", "--text-weight", "1.5"], "1.5 is out of range (0 <= W <= 1)"),
        (["--text", "x=a", "--checkpoint", "SED"], "is a sed checkpoint, which holds no text tower"),
    ],
)
def test_one_line_errors(setup, tmp_path, capsys, args, message):
    root, clap, _, _ = setup
    sed_ckpt = tmp_path / "s.pt"
    save_model(sed_ckpt, zero_shot_classifier(clap, ["x"]))
    args = [str(sed_ckpt) if a == "SED" else a for a in args]
    checkpoint = [] if "--checkpoint" in args else ["--checkpoint", str(clap)]
    try:
        code = main(["enroll", *checkpoint, *args, "--out", str(tmp_path / "o.pt")])
    except SystemExit as e:  # argparse's own range check
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "o.pt").exists()
