"""ONNX export of zero-shot CLAP classifiers (unfused and fused, tiny random CLAP directories): the graph's
logits equal PyTorch's on short, exact-clip, longer and batched clips (the repeat-pad's dynamic length),
through the Classifier on files of mixed lengths (a long one cropped to its centre) and through ``sedkit
classify``; ``sedkit export --labels`` bakes the text prototypes in without an enrol step; int8 runs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
import torch

from sed.checkpoint import save_model
from sed.cli.main import main
from sed.export.onnx import export_checkpoint
from sed.export.quantize import quantize_onnx
from sed.inference.classifier import Classifier
from sed.models.zeroshot import DEFAULT_TEMPLATE, zero_shot_classifier
from tests.models.clap_dir import make_clap_dir
from tests.sedkit_run import run

LABELS = ["dog barking", "siren", "rain on a roof"]
SR = 16000  # the small directories' rate; their clip is 1 s
TEMPLATE = "the sound of {}"
VARIANTS = ["unfused", "fused", "fusing"]  # fusing: fused with its fusion branch on every clip


def _meta(path) -> dict:
    proto = onnx.load(str(path), load_external_data=False)
    return json.loads({p.key: p.value for p in proto.metadata_props}["sed"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per variant: the PyTorch zero-shot classifier, its saved .pt and its .onnx. The unfused graph is
    exported from the saved checkpoint; the fused one straight from the CLAP directory by ``sedkit export
    --labels --template`` (no enrol step)."""
    root = tmp_path_factory.mktemp("clap_export")
    rng = np.random.default_rng(0)
    files = []
    for i, seconds in enumerate((0.37, 1.0, 2.71, 0.0641)):  # short, the clip, long (cropped), one frame+
        t = np.arange(int(seconds * SR)) / SR
        wave = 0.2 * np.sin(2 * np.pi * (250 + 400 * i) * t) + 0.05 * rng.standard_normal(t.size)
        files.append(root / f"clip{i}.wav")
        sf.write(files[-1], wave.astype(np.float32), SR, subtype="FLOAT")
    out = {}
    for name in VARIANTS:
        fused = name == "fused"
        clap = out["fused"].clap if name == "fusing" else make_clap_dir(root / name, fused=fused, small=True)
        template = TEMPLATE if fused else DEFAULT_TEMPLATE
        extra = {"fuse_short_clips": True} if name == "fusing" else {}
        model = zero_shot_classifier(clap, LABELS, template, **extra)
        pt = save_model(root / f"{name}.pt", model, LABELS)
        path = root / f"{name}.onnx"
        if fused:
            argv = [
                "export",
                "--checkpoint",
                clap,
                "--out",
                path,
                "--labels",
                *LABELS,
                "--template",
                template,
            ]
            assert main([str(a) for a in argv]) == 0
        else:
            assert export_checkpoint(pt, path)["max_abs_diff"] <= 1e-4
        out[name] = SimpleNamespace(model=model, clap=clap, pt=pt, onnx=path, files=files, template=template)
    return out


@pytest.mark.parametrize("name", VARIANTS)
def test_the_graph_gives_pytorch_logits_at_every_length(exported, name):
    e = exported[name]
    session = ort.InferenceSession(str(e.onnx), providers=["CPUExecutionProvider"])
    clip = e.model.clip_samples
    # one FFT frame, a length that repeats 2x and leaves a remainder, just short of, at and past the clip
    for samples in (1024, 7001, clip - 1, clip, clip + 7919, 3 * clip):
        for batch in (1, 3):
            wave = 0.3 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(samples + batch))
            logits, emb = session.run(None, {"waveform": wave.numpy()})
            with torch.inference_mode():
                ref, ref_emb = e.model(wave), e.model.embed(wave)
            assert logits.shape == (batch, len(LABELS))
            assert np.abs(logits - ref.numpy()).max() <= 1e-4, (samples, batch)
            assert np.abs(emb - ref_emb.numpy()).max() <= 1e-4, (samples, batch)


@pytest.mark.parametrize("name", VARIANTS)
def test_the_classifier_on_the_graph_equals_it_on_the_checkpoint(exported, name):
    """One batch of files of four lengths (the graph runs once per length), a long one cut to its centre."""
    e = exported[name]
    got = Classifier.from_pretrained(e.onnx, device="cpu").score(e.files, batch_size=8)
    ref = Classifier.from_pretrained(e.pt, device="cpu").score(e.files, batch_size=8)
    assert [r.cropped for r in got] == [r.cropped for r in ref] == [None, None, 1.0, None]
    for g, r in zip(got, ref):
        assert g.error is None and r.error is None
        assert np.abs(g.scores - r.scores).max() <= 1e-5, g.name
    # the scores are the zero-shot model's softmax of the (centre of the) clip, not a constant
    assert np.abs(ref[0].scores - ref[1].scores).max() > 1e-4


@pytest.mark.parametrize("name", VARIANTS)
def test_sedkit_classify_with_the_onnx_equals_with_the_pt(exported, name, capsys):
    e = exported[name]
    rows = {}
    for ckpt in (e.onnx, e.pt):
        code, out, err = run(
            capsys, "classify", "--checkpoint", ckpt, *e.files, "--format", "json", "--top-k", 3
        )
        assert code == 0, err
        rows[ckpt.suffix] = [json.loads(line) for line in out.splitlines()]
    assert len(rows[".onnx"]) == len(e.files)
    for g, r in zip(rows[".onnx"], rows[".pt"]):
        assert [t["label"] for t in g["top_k"]] == [t["label"] for t in r["top_k"]]
        assert np.allclose([t["score"] for t in g["top_k"]], [t["score"] for t in r["top_k"]], atol=1e-5)


def test_export_with_labels_describes_the_zero_shot_classes(exported):
    e = exported["fused"]
    meta = _meta(e.onnx)
    assert meta["labels"] == LABELS and meta["model_name"] == "prototype_classifier"
    assert meta["zero_shot"] == {"source": str(e.clap), "template": TEMPLATE}
    assert meta["sample_rate"] == SR and meta["max_samples"] == e.model.clip_samples


def test_export_refusals_are_one_line(exported, capsys, tmp_path):
    e = exported["unfused"]
    out = tmp_path / "x.onnx"
    code, _, err = run(capsys, "export", "--checkpoint", e.clap, "--out", out, "--template", "a {}")
    assert code == 2 and "--template needs --labels" in err
    code, _, err = run(capsys, "export", "--checkpoint", e.pt, "--out", out, "--labels", "dog")
    assert code == 2 and "holds no text tower" in err and "Traceback" not in err
    empty = tmp_path / "labels.txt"
    empty.write_text("# none\n")
    code, _, err = run(capsys, "export", "--checkpoint", e.clap, "--out", out, "--labels-file", empty)
    assert code == 2 and "holds no label" in err and str(empty) in err
    code, _, err = run(
        capsys, "export", "--checkpoint", e.onnx, "--format", "triton", "--out", tmp_path, "--labels", "dog"
    )
    assert code == 2 and "fixed classes" in err
    assert not out.exists() and not list(tmp_path.glob("*/config.pbtxt"))


def test_int8_graph_runs_and_states_its_top1_agreement(exported, tmp_path):
    """int8 is an approximation: the test asserts that it runs and scores the classes, and measures its top-1
    agreement with fp32 (printed; no equality is claimed)."""
    e = exported["unfused"]
    path = quantize_onnx(e.onnx, tmp_path / "int8.onnx")
    assert _meta(path)["precision"] == "int8" and _meta(path)["labels"] == LABELS
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wave = 0.3 * torch.randn(64, 9000, generator=torch.Generator().manual_seed(1))
    logits = session.run(["logits"], {"waveform": wave.numpy()})[0]
    with torch.inference_mode():
        ref = e.model(wave).numpy()
    assert logits.shape == ref.shape and np.isfinite(logits).all()
    agree = float((logits.argmax(1) == ref.argmax(1)).mean())
    print(f"int8 vs fp32 top-1 agreement {agree:.2f}, max |logit diff| {np.abs(logits - ref).max():.3f}")
    assert agree > 1 / len(LABELS)  # better than chance on a random tiny model
