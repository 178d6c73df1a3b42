import numpy as np
import pytest
import torch

from sed.checkpoint import save_model
from sed.data.synth import signals as synth_signals
from sed.export.onnx import export_onnx
from sed.models import create_model

LABELS = ["dog", "rain", "siren", "tone", "hiss"]


def _ast():
    torch.manual_seed(0)
    model = create_model("ast_micro", num_classes=5, input_tdim=48, labels=LABELS).eval()
    with torch.no_grad():  # a head with the logit spread of a trained one (random heads give near-ties)
        model.head[1].weight.mul_(30.0)
    return model


def _cnn():
    torch.manual_seed(0)
    return create_model("cnn_tiny", num_classes=5, labels=LABELS, clip_seconds=1.0).eval()


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """name -> (PyTorch model, its .pt checkpoint, its exported .onnx), for ast_micro and cnn_tiny."""
    root = tmp_path_factory.mktemp("exported")
    out = {}
    for name, build in (("ast", _ast), ("cnn", _cnn)):
        model = build()
        pt = save_model(root / f"{name}.pt", model)
        report = export_onnx(model, root / f"{name}.onnx", source=pt)
        out[name] = (model, pt, report["path"])
    return out


def synthetic_clips(n: int, samples: int, seed: int = 0) -> torch.Tensor:
    """``[n, samples]`` clips of the synthetic corpus' signal kinds (tones, chirps, noises, clicks...)."""
    rng = np.random.default_rng(seed)
    kinds = [
        synth_signals.tone,
        synth_signals.chirp,
        synth_signals.noise_burst,
        synth_signals.click_train,
        synth_signals.harmonic_stack,
        synth_signals.am_tone,
        synth_signals.fm_tone,
        synth_signals.hiss,
    ]
    clips = [kinds[i % len(kinds)](rng, samples, 16000) for i in range(n)]
    return torch.from_numpy(
        np.stack([0.5 * c / max(np.abs(c).max(), 1e-6) for c in clips]).astype(np.float32)
    )


def tiny_description(**changes) -> dict:
    """The ``sed`` metadata of :func:`tiny_graph`: five labels at 16 kHz, inputs of 400 samples to an hour."""
    desc = {
        "model_name": "cnn_tiny",
        "model_kwargs": {},
        "labels": list(LABELS),
        "sample_rate": 16000,
        "clip_samples": 16000,
        "max_samples": 16000,
        "multi_label": False,
        "onnx_inputs": ["waveform"],
        "onnx_outputs": ["logits", "embedding"],
        "precision": "fp32",
        "onnx_input_samples": [400, 57_600_000],
    }
    return {**desc, **changes}


def tiny_graph(
    desc: dict | None = None,
    *,
    batch="batch",
    samples="samples",
    classes: int = 5,
    input_type: int | None = None,
    logits_type: int | None = None,
    embedding_type: int | None = None,
    sum_batch: str | None = None,
    opset: int = 18,
):
    """A small hand-built ONNX graph in the layout sed exports: ``waveform [batch, samples]`` -> ``embedding``
    (the mean, max and min of each row, ``[batch, 3]``) and ``logits`` (``embedding @ W``,
    ``[batch, classes]``), with ``desc`` (default :func:`tiny_description`) as its ``sed`` metadata. Dims and
    element types are parameters, so a test can declare impossible or foreign ones (ints, strings or None,
    ``onnx.TensorProto`` types); ``sum_batch`` "keep" or "drop" sums the logits over the batch
    (``[1, classes]`` or ``[classes]``)."""
    import json

    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    input_type, logits_type, embedding_type = (t or f32 for t in (input_type, logits_type, embedding_type))
    nodes = [helper.make_node("Cast", ["waveform"], ["x"], to=f32)]
    nodes += [
        helper.make_node(op, ["x", "axis"], [op], keepdims=1)
        for op in ("ReduceMean", "ReduceMax", "ReduceMin")
    ]
    nodes += [
        helper.make_node("Concat", ["ReduceMean", "ReduceMax", "ReduceMin"], ["stats"], axis=1),
        helper.make_node("MatMul", ["stats", "W"], ["scores"]),
        helper.make_node("Cast", ["summed" if sum_batch else "scores"], ["logits"], to=logits_type),
        helper.make_node("Cast", ["stats"], ["embedding"], to=embedding_type),
    ]
    if sum_batch:
        nodes.insert(
            -2,
            helper.make_node(
                "ReduceSum", ["scores", "batch_axis"], ["summed"], keepdims=int(sum_batch == "keep")
            ),
        )
    weights = np.linspace(-2.0, 2.0, 3 * classes, dtype=np.float32).reshape(3, classes)
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("waveform", input_type, [batch, samples])],
        [
            helper.make_tensor_value_info(
                "logits",
                logits_type,
                {None: [batch, classes], "keep": [1, classes], "drop": [classes]}[sum_batch],
            ),
            helper.make_tensor_value_info("embedding", embedding_type, [batch, 3]),
        ],
        [
            helper.make_tensor("W", f32, [3, classes], weights.ravel().tolist()),
            helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
            helper.make_tensor("batch_axis", TensorProto.INT64, [1], [0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.metadata_props.add(key="sed", value=json.dumps(tiny_description() if desc is None else desc))
    return model
