"""int8 with the attention blocks fused (``QAttention``): the rewrite is exact, counted, and refused clearly;
the fused int8 graph gives what the linear-only int8 graph gives; other families are unchanged."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sed.errors import CheckpointError
from sed.export.onnx import export_onnx
from sed.export.quantize import quantize_onnx
from sed.export.quantize_attention import fuse_attention
from sed.inference.classifier import Classifier
from sed.models import create_model
from tests.export.fixtures import synthetic_clips, tiny_graph

#: clips whose fp32 top-1 logit leads the second by more than this are "not near-ties"
MARGIN = 0.5


def _logits(path, clips: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"waveform": clips.numpy()})[0]


def _ops(path) -> list[tuple[str, str]]:
    return [(n.domain, n.op_type) for n in onnx.load(str(path), load_external_data=False).graph.node]


def _desc(path) -> dict:
    proto = onnx.load(str(path), load_external_data=False)
    return json.loads({p.key: p.value for p in proto.metadata_props}["sed"])


@pytest.fixture(scope="module")
def int8(exported, tmp_path_factory):
    """The tiny AST's int8 files: attention fused, and linear layers only."""
    _, _, path = exported["ast"]
    root = tmp_path_factory.mktemp("int8")
    return {mode: quantize_onnx(path, root / f"{mode}.onnx", attention=mode) for mode in ("fused", "fp32")}


def test_fusion_is_exact_and_counted(exported, tmp_path):
    """Each full self-attention block becomes one com.microsoft.Attention node with timm's packed qkv weight;
    AST's last block (queries of the two pooled tokens only) is not of that form and stays as exported.
    In fp32 the rewritten graph computes the same function: same logits to float rounding."""
    model, _, path = exported["ast"]
    proto = onnx.load(str(path))
    assert fuse_attention(proto) == len(model.blocks) - 1 == 1
    ops = [(n.domain, n.op_type) for n in proto.graph.node]
    assert ops.count(("com.microsoft", "Attention")) == 1 and ops.count(("", "Attention")) == 1
    onnx.checker.check_model(proto)
    onnx.save(proto, tmp_path / "fused.onnx")
    clips = synthetic_clips(8, model.clip_samples, seed=3)
    np.testing.assert_allclose(_logits(tmp_path / "fused.onnx", clips), _logits(path, clips), atol=1e-5)


def test_fused_int8_has_qattention_and_matches_linear_only_int8(exported, int8):
    """The fused file has one QAttention per fused block (its count in the metadata); QAttention quantises
    the block's input and its packed qkv weight per tensor as the linear-only graph's qkv layer does, and
    its products stay fp32, so the logits are the linear-only int8 graph's up to float summation order."""
    model, _, _ = exported["ast"]
    fused, linear = int8["fused"], int8["fp32"]
    assert _ops(fused).count(("com.microsoft", "QAttention")) == _desc(fused)["int8_attention"] == 1
    assert ("com.microsoft", "QAttention") not in _ops(linear) and _desc(linear)["int8_attention"] == 0
    assert (
        _desc(fused)["int8_nodes"] == _desc(linear)["int8_nodes"] - 1
    )  # the fused qkv layer is in QAttention
    clips = synthetic_clips(48, model.clip_samples, seed=4)
    got, lin = _logits(fused, clips), _logits(linear, clips)
    with torch.inference_mode():
        ref = model(clips).numpy()
    assert np.abs(got - lin).max() < 1e-3 * np.abs(lin).max()
    # against fp32 PyTorch: the int8 error of the linear-only path (see test_quantize), no more
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > MARGIN
    assert clear.sum() >= 24 and (ref.argmax(1) == got.argmax(1))[clear].mean() >= 0.95
    assert np.abs(ref - got).max() < 0.1 * np.abs(ref).max()


def test_classifier_runs_the_fused_int8_file_in_every_mode(int8, exported):
    model, _, _ = exported["ast"]
    clips = list(synthetic_clips(3, 2 * model.clip_samples, seed=5))
    fused, linear = (Classifier.from_pretrained(int8[m]) for m in ("fused", "fp32"))
    for kwargs in ({}, {"window": 0.5, "hop": 0.25}):
        a, b = fused.score(clips, **kwargs), linear.score(clips, **kwargs)
        assert all(r.error is None for r in a)
        np.testing.assert_allclose([r.scores for r in a], [r.scores for r in b], atol=1e-3)
        if kwargs:
            assert [len(r.windows) for r in a] == [len(r.windows) for r in b] and len(a[0].windows) > 1
    (emb, _), (ref, _) = fused.embed(clips), linear.embed(clips)
    assert emb.shape == (3, model.embed_dim)
    np.testing.assert_allclose(emb, ref, atol=1e-3 * np.abs(ref).max())


def test_ced_blocks_are_fused_and_a_cnn_is_unchanged(exported, tmp_path):
    """CED's blocks (timm's form, a dynamic token count) are all fused; the CNN has no attention, and its
    int8 file is the linear-only one."""
    torch.manual_seed(0)
    ced = create_model("ced_tiny", num_classes=3, embed_dim=32, depth=2, num_heads=2).eval()
    path = export_onnx(ced, tmp_path / "ced.onnx")["path"]
    out = quantize_onnx(path, tmp_path / "ced8.onnx", attention="fused")
    assert _ops(out).count(("com.microsoft", "QAttention")) == _desc(out)["int8_attention"] == 2
    clips = synthetic_clips(4, 16000, seed=6)
    assert _logits(out, clips).shape == (4, 3)

    _, _, cnn = exported["cnn"]
    a = quantize_onnx(cnn, tmp_path / "cnn_fused.onnx", attention="fused")
    b = quantize_onnx(cnn, tmp_path / "cnn_linear.onnx")
    assert _ops(a) == _ops(b) and _desc(a)["int8_attention"] == 0 and _desc(a)["int8_nodes"] >= 1


def test_no_block_and_a_failure_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="no self-attention block of timm's fused-qkv form") as err:
        fuse_attention(tiny_graph(), strict=True)
    assert "\n" not in str(err.value)
    assert fuse_attention(tiny_graph()) == 0
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file\n")
    with pytest.raises(CheckpointError, match="int8 quantisation failed") as err:
        quantize_onnx(bad, tmp_path / "out.onnx", attention="fused")
    assert "\n" not in str(err.value) and "bad.onnx" in str(err.value)
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(ValueError, match="fp32, fused"):
        quantize_onnx(bad, tmp_path / "out.onnx", attention="int4")
