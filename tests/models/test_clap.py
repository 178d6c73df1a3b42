"""The clap family against transformers itself: a tiny random ``ClapModel`` with its feature extractor and
tokenizer saved in the Hugging Face layout (``tests.models.clap_dir``); sed's zero-shot scores equal the
``zero-shot-audio-classification`` pipeline's on the same audio and labels, unfused and fused, for short,
exact-clip, long (the centre, with the pipeline's random crop pinned to it) and batched mixed-length input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from sed.checkpoint import save_model
from sed.errors import CheckpointError, DatasetError
from sed.inference.classifier import Classifier
from sed.models.loading import load_model
from sed.models.pretrained import sources
from sed.models.zeroshot import DEFAULT_TEMPLATE, prompts, read_labels, zero_shot_classifier
from tests.models.clap_dir import make_clap_dir

LABELS = ["dog barking", "siren", "rain on a roof"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("clap")
    return {fused: make_clap_dir(root / ("fused" if fused else "unfused"), fused=fused) for fused in (0, 1)}


@pytest.fixture(scope="module")
def pipelines(dirs):
    from transformers import pipeline

    return {k: pipeline("zero-shot-audio-classification", model=str(d)) for k, d in dirs.items()}


def _noise(seconds: float, seed: int, rate: int = 48000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    tone = np.sin(2 * np.pi * (300 + 700 * seed) * t) * 0.2
    return (tone + rng.standard_normal(n) * 0.05).astype(np.float32)


def _reference(pipe, audio: np.ndarray, labels=LABELS, template=DEFAULT_TEMPLATE) -> np.ndarray:
    got = {r["label"]: r["score"] for r in pipe(audio, candidate_labels=labels, hypothesis_template=template)}
    return np.array([got[lab] for lab in labels])


@pytest.mark.parametrize("fused", [0, 1], ids=["unfused", "fused"])
def test_zero_shot_scores_equal_the_transformers_pipeline(dirs, pipelines, fused, tmp_path, monkeypatch):
    clips = {"short": _noise(2.3, 1), "exact": _noise(10.0, 2), "tiny": _noise(0.05, 3)}
    if not fused:  # the unfused extractor crops a long clip at random: pin its draw to sed's centre crop
        clips["long"] = _noise(12.5, 4)
        monkeypatch.setattr(np.random, "randint", lambda low, high: (high - 1) // 2)
    files = []
    for name, audio in clips.items():
        sf.write(tmp_path / f"{name}.wav", audio, 48000, subtype="FLOAT")
        files.append(str(tmp_path / f"{name}.wav"))
    # a fused model as transformers' extractor runs a clip scored alone: its fusion branch on every clip
    extra = {"fuse_short_clips": True} if fused else {}
    clf = Classifier.from_pretrained(dirs[fused], labels=LABELS, device="cpu", **extra)
    results = clf.score(files, batch_size=4)  # one batch of mixed lengths
    for (name, audio), r in zip(clips.items(), results):
        assert r.error is None
        np.testing.assert_allclose(r.scores, _reference(pipelines[fused], audio), atol=1e-5, err_msg=name)
    alone = [clf.score([f])[0].scores for f in files]
    np.testing.assert_allclose(np.stack(alone), np.stack([r.scores for r in results]), atol=1e-6)


def test_a_fused_model_scores_a_short_clip_as_laion_does_by_default(dirs):
    """LAION's inference runs a clip of up to 10 s without the fusion branch (``is_longer`` False; the
    original itself: tests/models/test_clap_laion.py): transformers' ClapModel with that flag is the
    reference."""
    from transformers import ClapFeatureExtractor, ClapModel, ClapProcessor

    model = ClapModel.from_pretrained(str(dirs[1])).eval()
    processor = ClapProcessor.from_pretrained(str(dirs[1]))
    assert isinstance(processor.feature_extractor, ClapFeatureExtractor)
    clf = Classifier.from_pretrained(dirs[1], labels=LABELS, device="cpu")
    for seconds in (2.3, 10.0):
        audio = _noise(seconds, 9)
        inputs = processor(
            text=[DEFAULT_TEMPLATE.format(x) for x in LABELS], audio=audio, sampling_rate=48000,
            return_tensors="pt", padding=True,
        )  # fmt: skip
        inputs["is_longer"] = torch.zeros_like(inputs["is_longer"])
        with torch.no_grad():
            ref = model(**inputs).logits_per_audio.softmax(-1)[0].numpy()
        got = clf.score([("x", torch.from_numpy(audio))])[0].scores
        np.testing.assert_allclose(got, ref, atol=1e-5)
        fusing = Classifier.from_pretrained(dirs[1], labels=LABELS, device="cpu", fuse_short_clips=True)
        assert np.abs(fusing.score([("x", torch.from_numpy(audio))])[0].scores - got).max() > 1e-4


def test_the_template_and_the_labels_reach_the_text_tower(dirs, pipelines):
    audio = _noise(3.0, 5)
    template = "A recording of {} outdoors."
    clf = Classifier.from_pretrained(dirs[0], labels=LABELS[:2], template=template, device="cpu")
    got = clf.score([("x", torch.from_numpy(audio))])[0].scores
    np.testing.assert_allclose(got, _reference(pipelines[0], audio, LABELS[:2], template), atol=1e-5)
    assert prompts(["a b"], template) == ["A recording of a b outdoors."]
    for bad in ("no slot", "{} and {}", "{0}"):
        with pytest.raises(ValueError, match="exactly one"):
            prompts(["x"], bad)
    with pytest.raises(ValueError, match="given twice"):
        prompts(["x", "x"])


def test_the_front_end_equals_the_feature_extractor(dirs):
    from transformers import ClapFeatureExtractor

    for fused, d in dirs.items():
        model = load_model(d)[0]
        extractor = ClapFeatureExtractor.from_pretrained(str(d))
        for seconds in (1.7, 10.0):
            audio = _noise(seconds, 6)
            ref = extractor(audio, sampling_rate=48000, return_tensors="pt")["input_features"]
            got = model.features(torch.from_numpy(audio)[None])
            assert got.shape == ref.shape == (1, 4 if fused else 1, 1001, 64)
            assert (got - ref).abs().max() < 2e-3  # dB; float32 STFT against float64 numpy


def test_a_zero_shot_checkpoint_saves_loads_and_scores_the_same(dirs, tmp_path):
    model = zero_shot_classifier(dirs[1], LABELS)
    path = save_model(tmp_path / "zs.pt", model)
    loaded, desc = load_model(path)
    assert desc["labels"] == LABELS and desc["model_name"] == "prototype_classifier"
    assert desc["model_kwargs"]["backbone"]["model_name"] == "clap_htsat_tiny"
    x = torch.from_numpy(_noise(4.0, 7))[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert model.head.scale == pytest.approx(np.exp(2.5))  # exp(logit_scale_a) of the directory


def test_a_clap_checkpoint_without_labels_embeds_but_does_not_classify(dirs):
    model, desc = load_model(dirs[0])
    assert model.num_classes == 0 and not desc["labels"] and model.sample_rate == 48000
    with torch.no_grad():
        assert model.embed(torch.zeros(2, 48000)).shape == (2, 16)
    with pytest.raises(CheckpointError, match="has no classes: name them by text"):
        Classifier.from_pretrained(dirs[0])


def _copy(src, dst, edit=None, drop=()):
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    if edit is not None:
        cfg = json.loads((dst / "config.json").read_text())
        edit(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _audio_hidden(cfg):
    cfg["audio_config"]["hidden_size"] = 64


def _projection(cfg):
    cfg["projection_dim"] = 24
    cfg["audio_config"]["projection_dim"] = 24
    cfg["text_config"]["projection_dim"] = 24


def _text_width(cfg):
    cfg["text_config"]["hidden_size"] = 48


@pytest.mark.parametrize(
    "edit, drop, message",
    [
        (
            None,
            ("vocab.json", "merges.txt", "tokenizer.json"),
            "has no tokenizer: tokenizer.json, or vocab.json",
        ),
        (_audio_hidden, (), "audio_config contradicts itself"),
        (_projection, (), "not fit"),
        (_text_width, (), "text weights do not fit its config"),
        (None, ("processor_config.json",), "has no feature extractor config"),
    ],
    ids=["no-tokenizer", "hidden-size", "projection", "text-width", "no-extractor"],
)
def test_a_broken_clap_directory_is_one_checkpoint_error(dirs, tmp_path, edit, drop, message):
    broken = _copy(dirs[0], tmp_path / "broken", edit, drop)
    with pytest.raises(CheckpointError) as err:
        zero_shot_classifier(broken, LABELS)
    text = str(err.value)
    assert message in text and str(broken) in text and "\n" not in text


def test_a_feature_path_that_contradicts_the_model_is_refused(dirs, tmp_path):
    broken = _copy(dirs[0], tmp_path / "broken")
    proc = json.loads((broken / "processor_config.json").read_text())
    proc["feature_extractor"]["truncation"] = "fusion"
    (broken / "processor_config.json").write_text(json.dumps(proc))
    with pytest.raises(
        CheckpointError, match="truncation 'fusion' does not fit a model with enable_fusion=False"
    ):
        load_model(broken)


def test_a_short_name_offline_is_one_line(monkeypatch):
    def offline(repo):
        raise OSError(f"We couldn't connect to 'https://huggingface.co' to load {repo}")

    monkeypatch.setattr(sources, "hub_snapshot", offline)
    with pytest.raises(CheckpointError) as err:
        Classifier.from_pretrained("clap-htsat-unfused", labels=LABELS)
    text = str(err.value)
    assert text.startswith("clap-htsat-unfused: could not be downloaded from hf://laion/clap-htsat-unfused")
    assert "https://huggingface.co/laion/clap-htsat-unfused" in text and "\n" not in text


def test_text_labels_need_the_clap_source_not_a_sed_checkpoint(dirs, tmp_path):
    path = save_model(tmp_path / "zs.pt", zero_shot_classifier(dirs[0], LABELS))
    with pytest.raises(CheckpointError, match="holds no text tower"):
        zero_shot_classifier(path, ["cat"])


def test_a_labels_file(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("# ESC-50\ndog\n\n  chirping birds  \n", encoding="utf-8")
    assert read_labels(f) == ["dog", "chirping birds"]
    f.write_text("dog\ndog\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="repeats the label 'dog'"):
        read_labels(f)
    f.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="holds no label"):
        read_labels(f)
    f.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DatasetError, match="cannot read the labels file"):
        read_labels(f)


def test_a_description_longer_than_the_text_tower_takes_is_cut(dirs):
    from sed.models.zeroshot import clap_text

    text = clap_text(dirs[0])
    long, cut = (
        "a dog barks " * 300,
        text.tokenizer.decode(text.tokenizer("a dog barks " * 300)["input_ids"][1 : text.max_tokens - 1]),
    )
    emb = text.encode([long, cut])
    assert text.max_tokens == 78 and emb.shape == (2, 16)
    torch.testing.assert_close(emb[0], emb[1], atol=1e-5, rtol=0)


def test_sedkit_embed_takes_a_clap_directory(dirs, tmp_path, capsys):
    from sed.cli.main import main

    sf.write(tmp_path / "a.wav", _noise(2.0, 8, 44100), 44100)  # resampled to 48 kHz
    assert (
        main(
            ["embed", str(tmp_path / "a.wav"), "--checkpoint", str(dirs[0]), "--out", str(tmp_path / "e.npy")]
        )
        == 0
    )
    emb = np.load(tmp_path / "e.npy")
    clf = Classifier.from_pretrained(dirs[0], need_classes=False)
    np.testing.assert_allclose(emb, clf.embed([str(tmp_path / "a.wav")])[0], atol=1e-6)
    assert emb.shape == (1, 16)


def test_an_undeclared_hub_id_with_labels_is_read_once(dirs, monkeypatch):
    from sed.inference.predictor import load_predictor

    calls = []

    def snapshot(repo):
        calls.append(repo)
        return str(dirs[0])

    monkeypatch.setattr(sources, "hub_snapshot", snapshot)
    clf = load_predictor(["someone/their-clap"], labels=LABELS, device="cpu")
    assert calls == ["someone/their-clap"] and clf.labels == LABELS
    assert clf.meta["source"].startswith("someone/their-clap (")
