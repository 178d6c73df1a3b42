"""int8: PyTorch's and ONNX Runtime's dynamic quantisation of the linear layers agree with fp32."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from sed.export.quantize import quantize_onnx, quantize_torch
from sed.inference.classifier import Classifier
from tests.export.fixtures import synthetic_clips

#: clips whose fp32 top-1 logit leads the second by more than this are "not near-ties"
MARGIN = 0.5


def _agreement(fp32: np.ndarray, int8: np.ndarray) -> tuple[float, int]:
    top2 = np.sort(fp32, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > MARGIN
    agree = (fp32.argmax(1) == int8.argmax(1))[clear]
    return float(agree.mean()), int(clear.sum())


def test_torch_int8_replaces_linear_layers_and_agrees(exported):
    model, _, _ = exported["ast"]
    q = quantize_torch(model)
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert any(isinstance(m, nn.Linear) for m in model.modules())  # the original is untouched
    clips = synthetic_clips(48, model.clip_samples)
    with torch.inference_mode():
        ref, got = model(clips).numpy(), q(clips).numpy()
    share, n = _agreement(ref, got)
    assert n >= 24 and share >= 0.95, (share, n)
    assert np.abs(ref - got).max() < 0.1 * np.abs(ref).max()


def test_onnx_int8_file_agrees_and_says_so(exported, tmp_path):
    model, _, path = exported["ast"]
    out = quantize_onnx(path, tmp_path / "int8.onnx")
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert "MatMulInteger" in ops and "DFT" in ops  # linear layers int8, the front end float
    desc = json.loads({p.key: p.value for p in proto.metadata_props}["sed"])
    assert desc["precision"] == "int8" and desc["labels"] == model.labels
    clips = synthetic_clips(48, model.clip_samples, seed=1)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"waveform": clips.numpy()}
    )[0]
    with torch.inference_mode():
        ref = model(clips).numpy()
    share, n = _agreement(ref, got)
    assert n >= 24 and share >= 0.95, (share, n)


def test_classifier_int8_precision(exported):
    model, pt, _ = exported["ast"]
    clf = Classifier.from_pretrained(pt, device="cpu", precision="int8")
    assert not any(type(m) is nn.Linear for m in clf.model.modules())
    clips = list(synthetic_clips(4, model.clip_samples, seed=2))
    fp32 = Classifier.from_pretrained(pt, device="cpu").score(clips)
    int8 = clf.score(clips)
    assert all(a.scores.argmax() == b.scores.argmax() for a, b in zip(fp32, int8))


def test_int8_export_reports_the_int8_graph_against_pytorch(exported, tmp_path, capsys):
    """``export --precision int8`` reports the int8 graph's difference from PyTorch and the fp32 graph's,
    measured on the same inputs (the exporter's self-check clips)."""
    import re

    from sed.cli.main import main
    from sed.export.onnx import check_inputs, max_logit_diff
    from sed.models.loading import load_model

    _, pt, _ = exported["ast"]
    out = tmp_path / "int8.onnx"
    args = ["export", "--checkpoint", str(pt), "--out", str(out), "--precision", "int8"]
    assert main([*args, "--int8-attention", "fused"]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "1 attention blocks fused (QAttention)" in line  # ast_micro: its first block (the last is pooled)
    found = dict(re.findall(r"(fp32|int8) graph vs PyTorch: max \|logit difference\| ([0-9.e+-]+)", line))
    assert set(found) == {"fp32", "int8"}, line
    model, _ = load_model(pt)
    int8 = max_logit_diff(out, model, check_inputs(model, dynamic_batch=True))
    assert float(found["int8"]) == pytest.approx(int8, rel=0.01)
    assert float(found["fp32"]) < 1e-4 < int8  # quantisation error is visible, the fp32 graph's is not
