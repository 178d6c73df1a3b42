"""ONNX export: the graph alone (onnxruntime, no sed) gives PyTorch's logits for clips of any length."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sed.checkpoint import read_checkpoint
from sed.cli.main import main
from sed.errors import CheckpointError
from sed.export.onnx import export_onnx
from sed.models import create_model


@pytest.mark.parametrize("name", ["ast", "cnn"])
@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_alone_gives_pytorch_logits_at_any_length(exported, name, batch):
    model, _, path = exported[name]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["waveform"]
    assert [o.name for o in session.get_outputs()] == ["logits", "embedding"]
    clip = model.clip_samples
    for samples in (clip // 3, clip, clip + 7919, 2 * clip):  # shorter, equal, longer than the clip
        wave = 0.3 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(samples))
        logits, emb = session.run(None, {"waveform": wave.numpy()})
        with torch.inference_mode():
            ref, ref_emb = model(wave), model.embed(wave)
        assert logits.shape == (batch, 5) and emb.shape == tuple(ref_emb.shape)
        assert np.abs(logits - ref.numpy()).max() <= 1e-4, samples
        assert np.abs(emb - ref_emb.numpy()).max() <= 1e-4, samples


@pytest.mark.parametrize("name", ["ast", "cnn"])
def test_metadata_round_trips_and_checker_passes(exported, name):
    model, pt, path = exported[name]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    desc = json.loads(meta["sed"])
    ckpt, _ = read_checkpoint(pt)
    for key in (
        "model_name",
        "model_kwargs",
        "labels",
        "sample_rate",
        "clip_samples",
        "multi_label",
        "frontend",
    ):
        assert desc[key] == ckpt[key], key
    assert desc["onnx_inputs"] == ["waveform"] and desc["onnx_outputs"] == ["logits", "embedding"]
    assert desc["precision"] == "fp32" and desc["exported_from"] == str(pt)
    batch = proto.graph.input[0].type.tensor_type.shape.dim
    assert batch[0].dim_param and batch[1].dim_param  # dynamic batch and samples


def test_static_batch_and_older_opset(tmp_path, exported):
    model, _, _ = exported["ast"]
    report = export_onnx(model, tmp_path / "b1.onnx", dynamic_batch=False, opset=18)
    proto = onnx.load(str(report["path"]))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 1 and dims[1].dim_param
    assert report["opset"] == 18 and {
        o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")
    } == {18}
    assert "Attention" not in {n.op_type for n in proto.graph.node} and report["max_abs_diff"] < 1e-4
    default = onnx.load(str(exported["ast"][2]))
    assert "Attention" in {n.op_type for n in default.graph.node}  # opset 23 (the default)


def test_export_verb_writes_a_checked_file(tmp_path, exported, capsys):
    _, pt, _ = exported["cnn"]
    out = tmp_path / "cli.onnx"
    assert main(["export", "--checkpoint", str(pt), "--out", str(out), "--no-dynamic-batch"]) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "max |logit difference|" in err
    onnx.checker.check_model(str(out))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_seld_models_are_refused_with_one_line(tmp_path, capsys):
    from sed.checkpoint import save_model

    pt = save_model(tmp_path / "seld.pt", create_model("resnet_conformer_tiny"))
    with pytest.raises(CheckpointError, match="not a mono clip classifier"):
        export_onnx(create_model("resnet_conformer_tiny"), tmp_path / "x.onnx", source=pt)
    assert main(["export", "--checkpoint", str(pt), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "seld.pt" in err[0]
    assert not (tmp_path / "x.onnx").exists()


# ---------------------------------------------------------------------- opsets (issue 23)
def test_an_opset_torch_cannot_write_is_one_usage_line_before_any_work(
    tmp_path, exported, capsys, monkeypatch
):
    import sed.models.loading
    from sed.export.onnx import supported_opsets

    low, high = supported_opsets()
    assert low <= 18 <= 23 <= high  # torch's exporter writes 18 (its own) up to 23 (the Attention op)
    monkeypatch.setattr(
        sed.models.loading, "load_model", lambda *a, **k: pytest.fail("loaded before the check")
    )
    _, pt, _ = exported["cnn"]
    for opset in (5, low - 1, high + 1, 999):
        out = tmp_path / f"o{opset}.onnx"
        capsys.readouterr()
        assert main(["export", "--checkpoint", str(pt), "--out", str(out), "--opset", str(opset)]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: ONNX opset {opset} is not supported: torch's exporter writes opsets {low} to {high}"
        ]
        assert not out.exists()


def test_the_reported_opset_is_the_one_written(tmp_path, exported, monkeypatch):
    """An exporter that writes another opset than the one asked (torch falls back to its own when a
    conversion fails): the report says what the file holds."""
    import sed.export.onnx as onnx_export

    real = onnx_export._exported_program
    monkeypatch.setattr(
        onnx_export, "_exported_program", lambda model, opset, dyn: real(model, opset - 1, dyn)
    )
    report = export_onnx(exported["cnn"][0], tmp_path / "o.onnx", opset=20)
    proto = onnx.load(str(report["path"]))
    assert report["opset"] == 19 == max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
