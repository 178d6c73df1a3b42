"""``sedkit export --format triton``: a model repository whose config.pbtxt parses with Triton's own
schema and names the written graph's real tensors, whose graph is the ONNX export's, and whose labels
are the checkpoint's."""

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format

from sed.checkpoint import read_checkpoint
from sed.cli.main import main
from sed.errors import OutputError, UsageError
from sed.export.quantize import quantize_onnx
from sed.export.triton import export_triton

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
ONNX_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32"}


def parse_config(entry):
    return text_format.Parse((entry / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def run(path, wave):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"waveform": wave})


@pytest.fixture(scope="module")
def repo(exported, tmp_path_factory):
    """A model repository with the AST test model packaged from its ONNX export, fp32 and int8."""
    root = tmp_path_factory.mktemp("model_repository")
    onnx_file = exported["ast"][2]
    export_triton(onnx_file, root, name="ast", max_batch_size=8, max_queue_delay_us=250)
    export_triton(onnx_file, root, name="ast_int8", precision="int8")
    return root


def wave_of(samples, batch=1, seed=0):
    return (0.3 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))).numpy()


def assert_config_names_the_graph(entry, max_batch_size):
    """The config's tensors are the written graph's (onnx.load and onnxruntime), the batch dimension
    left out when batched."""
    config = parse_config(entry)
    assert config.name == entry.name and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == max_batch_size
    graph = onnx.load(str(entry / "1" / "model.onnx"))
    session = ort.InferenceSession(str(entry / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    skip = 1 if max_batch_size else 0
    for declared, values, nodes in (
        (config.input, graph.graph.input, session.get_inputs()),
        (config.output, graph.graph.output, session.get_outputs()),
    ):
        assert [t.name for t in declared] == [v.name for v in values] == [n.name for n in nodes]
        for t, v, n in zip(declared, values, nodes):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
            assert list(t.dims) == dims[skip:], t.name
            assert list(t.dims) == [d if isinstance(d, int) else -1 for d in n.shape][skip:], t.name
            assert model_config_pb2.DataType.Name(t.data_type) == ONNX_TYPES[v.type.tensor_type.elem_type]
            assert n.type == "tensor(float)"
    return config, graph


@pytest.mark.parametrize("name", ["ast", "ast_int8"])
def test_config_parses_with_tritons_schema_and_names_the_graphs_tensors(repo, exported, name):
    config, graph = assert_config_names_the_graph(repo / name, 8 if name == "ast" else 16)
    assert [t.name for t in config.input] == ["waveform"] and list(config.input[0].dims) == [-1]
    assert [t.name for t in config.output] == ["logits", "embedding"]
    assert list(config.output[0].dims) == [5] and config.output[0].label_filename == "labels.txt"
    assert config.output[1].label_filename == ""
    assert config.dynamic_batching.max_queue_delay_microseconds == (250 if name == "ast" else 100)
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    model = exported["ast"][0]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["sed_sample_rate"] == str(model.sample_rate)
    assert params["sed_clip_samples"] == str(model.clip_samples)
    assert params["sed_precision"] == ("int8" if name == "ast_int8" else "fp32")
    assert not [p for p in os.listdir(repo) if p.startswith(".")]  # no staging folder left


def test_labels_file_is_the_checkpoints_labels(repo, exported):
    ckpt, _ = read_checkpoint(exported["ast"][1])
    for name in ("ast", "ast_int8"):
        assert (repo / name / "labels.txt").read_text(encoding="utf-8").splitlines() == ckpt["labels"]


def test_graph_is_the_onnx_export(repo, exported, tmp_path):
    wave = wave_of(exported["ast"][0].clip_samples + 777, batch=3)
    for got, ref in zip(run(repo / "ast" / "1" / "model.onnx", wave), run(exported["ast"][2], wave)):
        np.testing.assert_array_equal(got, ref)
    int8 = quantize_onnx(
        exported["ast"][2], tmp_path / "int8.onnx"
    )  # what --format onnx --precision int8 does
    got, ref = run(repo / "ast_int8" / "1" / "model.onnx", wave), run(int8, wave)
    np.testing.assert_array_equal(got[0], ref[0])
    fp32 = run(exported["ast"][2], wave)[0]
    assert np.abs(got[0] - fp32).max() < 0.2 * np.abs(fp32).max()  # int8, not another model
    assert not np.array_equal(got[0], fp32)


def test_cli_from_a_checkpoint_fixed_batch_round_trip(exported, tmp_path, capsys):
    model, pt, onnx_file = exported["cnn"]
    out = tmp_path / "repo"
    argv = ["export", "--checkpoint", str(pt), "--format", "triton", "--out", str(out), "--no-dynamic-batch"]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("wrote Triton model 'cnn' in ") and "max_batch_size 0" in err[0]
    )
    assert "fp32 graph vs PyTorch: max |logit difference|" in err[0]
    entry = out / "cnn"  # the default name: the checkpoint's stem
    config, _ = assert_config_names_the_graph(entry, 0)
    assert [list(t.dims) for t in config.input] == [[1, -1]]
    assert [list(t.dims) for t in config.output] == [[1, 5], [1, 384]]
    assert not config.HasField("dynamic_batching")  # Triton refuses it without a batch dimension
    wave = wave_of(model.clip_samples)
    for got, ref in zip(run(entry / "1" / "model.onnx", wave), run(onnx_file, wave)):
        np.testing.assert_allclose(got, ref, atol=1e-5)
    assert sorted(p.name for p in entry.iterdir()) == ["1", "config.pbtxt", "labels.txt"]


def test_an_existing_model_is_kept_unless_overwrite(exported, tmp_path):
    onnx_file = exported["cnn"][2]
    export_triton(onnx_file, tmp_path, name="m")
    (tmp_path / "other").mkdir()  # another model of the repository
    with pytest.raises(OutputError, match=r"m: a model of that name is already in the repository; pass"):
        export_triton(onnx_file, tmp_path, name="m", precision="int8")
    assert parse_config(tmp_path / "m").parameters["sed_precision"].string_value == "fp32"
    export_triton(onnx_file, tmp_path, name="m", precision="int8", overwrite=True)
    assert parse_config(tmp_path / "m").parameters["sed_precision"].string_value == "int8"
    assert sorted(os.listdir(tmp_path)) == ["m", "other"]  # nothing aside or staged is left


@pytest.mark.parametrize(
    "case, message",
    [
        ("out_is_a_file", "repo: is not a folder"),
        ("out_under_a_file", "file is not a folder"),
        ("entry_is_a_file", "repo/m: exists and is not a folder"),
        ("input_inside_entry", "repo/m: holds the input"),
        ("bad_name", "model name '../m' is not a folder name Triton takes"),
        ("opset_on_onnx", "--opset and --dynamic-batch do not apply to an .onnx checkpoint"),
        ("int8_graph_as_fp32", "is an int8 graph; pass --precision int8"),
        ("unreadable_checkpoint", "bad.pt: "),  # found after the staging folder is made: all of it removed
    ],
)
def test_bad_outputs_and_options_are_one_line(exported, tmp_path, capsys, case, message):
    out, source = tmp_path / "repo", exported["cnn"][2]
    extra = ["--name", "m"]
    if case == "out_is_a_file":
        out.write_text("x")
    elif case == "out_under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "repo"
    elif case == "entry_is_a_file":
        out.mkdir()
        (out / "m").write_text("x")
    elif case == "input_inside_entry":
        (out / "m" / "1").mkdir(parents=True)
        source = out / "m" / "1" / "model.onnx"
        source.write_bytes(exported["cnn"][2].read_bytes())
        extra.append("--overwrite")
    elif case == "bad_name":
        extra = ["--name", "../m"]
    elif case == "opset_on_onnx":
        extra.append("--opset=20")
    elif case == "int8_graph_as_fp32":
        source = quantize_onnx(source, tmp_path / "int8.onnx")
    elif case == "unreadable_checkpoint":
        source = tmp_path / "bad.pt"
        source.write_bytes(b"not a checkpoint")
    before = sorted(os.listdir(out)) if out.is_dir() else None
    argv = ["export", "--checkpoint", str(source), "--format", "triton", "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert (sorted(os.listdir(out)) if out.is_dir() else None) == before  # nothing written or removed


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_repository_is_one_line(exported, tmp_path):
    out = tmp_path / "ro"
    out.mkdir(mode=0o555)
    with pytest.raises(OutputError, match="cannot write in"):
        export_triton(exported["cnn"][2], out, name="m")


def test_bad_batching_options(exported, tmp_path, capsys):
    with pytest.raises(UsageError, match="max batch size 0 is not an integer from 1 to 1024"):
        export_triton(exported["cnn"][2], tmp_path, max_batch_size=0)
    for flag in (["--name", "m"], ["--max-batch-size", "4"], ["--max-queue-delay-us", "0"], ["--overwrite"]):
        assert main(["export", "--checkpoint", "x.pt", "--out", str(tmp_path / "x.onnx"), *flag]) == 2
        assert "are for --format triton" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_client_request_from_the_config(repo, exported):
    """The request docs/serving.md shows, built with tritonclient from the config's names and types (no
    server here: up to the request)."""
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import triton_to_np_dtype

    config = parse_config(repo / "ast")
    waveform, logits = config.input[0], config.output[0]
    datatype = model_config_pb2.DataType.Name(waveform.data_type).removeprefix("TYPE_")
    wave = wave_of(16000, batch=2).astype(triton_to_np_dtype(datatype))
    request = grpcclient.InferInput(waveform.name, list(wave.shape), datatype)
    request.set_data_from_numpy(wave)
    top = grpcclient.InferRequestedOutput(logits.name, class_count=3)
    assert request.name() == "waveform" and request.datatype() == "FP32" and request.shape() == [2, 16000]
    assert request._get_content() == wave.tobytes()
    assert len(request.shape()) == 1 + len(waveform.dims)  # the batch, then the config's dims
    assert top.name() == "logits" and top._get_tensor().parameters["classification"].int64_param == 3
