"""A clip classifier as an NVIDIA Triton model repository entry (``sedkit export --format triton``).

``export_triton(source, "model_repository", name="m")`` writes::

    model_repository/m/config.pbtxt     the model configuration (Triton's ModelConfig, protobuf text)
    model_repository/m/1/model.onnx     version 1: the graph ``sedkit export --format onnx`` writes
    model_repository/m/labels.txt       one label per line, the ``label_filename`` of ``logits``

The graph is :func:`sed.export.onnx.export_checkpoint`'s (front end inside: it takes the raw mono float32
waveform at the model's rate), int8 by :func:`sed.export.quantize.quantize_onnx`; an ``.onnx`` checkpoint
(a sed export) is packaged as it is, or quantised. The configuration names the graph's own inputs and
outputs, their element types and shapes as read back from the written file: ``platform:
"onnxruntime_onnx"``, ``max_batch_size`` (the graph's batch dimension left out of ``dims``) with
``dynamic_batching``, or ``max_batch_size: 0`` and the full shapes for a fixed-batch graph, one CPU
instance, and ``sed_*`` parameters carrying the description (sample rate, clip, labels, multi-label).

The entry is built in a temporary folder inside the repository and renamed into place, so Triton (which
may poll the repository) never sees half of it; an existing entry of the same name is refused unless
``overwrite``, and then replaced whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sed.checkpoint import ONNX_METADATA_KEY as METADATA_KEY
from sed.errors import CheckpointError, OutputError, UsageError, printable, short
from sed.fileio import atomic_folder, atomic_open, check_output, output_errors

__all__ = [
    "LABELS_FILE",
    "PLATFORM",
    "TRITON_TYPES",
    "config_text",
    "default_name",
    "export_triton",
    "tensor_specs",
]

PLATFORM = "onnxruntime_onnx"
LABELS_FILE = "labels.txt"
#: ONNX element types (``onnx.TensorProto``'s numbers) and Triton's names for them
TRITON_TYPES = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}
#: the largest ``max_batch_size`` offered (Triton takes any; more only queues more audio per call)
MAX_BATCH_SIZE = 1024
#: a model's name: a folder name Triton and a URL path take (``/v2/models/<name>/infer``)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def default_name(source: str | os.PathLike) -> str:
    """The entry's name when none is given: the checkpoint file's stem (a folder's or hub id's last part),
    its characters outside ``[A-Za-z0-9_.-]`` as ``_``."""
    path = Path(source)
    base = path.stem if path.is_file() else path.name
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", base).lstrip(".")[:128]
    return name or "model"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"model name {short(name)} is not a folder name Triton takes: 1 to 128 letters, digits, "
            "'_', '.' or '-', not starting with '.' or '-'"
        )
    return name


def tensor_specs(proto) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The graph's inputs and outputs as ``{"name", "data_type", "dims"}`` (Triton's type names; every
    dimension, a dynamic one as -1), read from an ONNX model proto."""

    def spec(value) -> dict[str, Any]:
        t = value.type.tensor_type
        if t.elem_type not in TRITON_TYPES:
            raise CheckpointError(None, f"the graph's {value.name!r} has ONNX element type {t.elem_type}")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {"name": value.name, "data_type": TRITON_TYPES[t.elem_type], "dims": dims}

    return [spec(v) for v in proto.graph.input], [spec(v) for v in proto.graph.output]


def _string(text: str) -> str:
    """``text`` as a protobuf text-format string literal."""
    from google.protobuf import text_encoding

    return '"' + text_encoding.CEscape(text, as_utf8=True) + '"'


def _tensors(field: str, specs: list[dict[str, Any]], batched: bool, labels: str | None) -> list[str]:
    lines = [f"{field} ["]
    for i, s in enumerate(specs):
        dims = s["dims"][1:] if batched else s["dims"]
        lines += [
            "  {",
            f"    name: {_string(s['name'])}",
            f"    data_type: {s['data_type']}",
            f"    dims: [ {', '.join(str(d) for d in dims)} ]",
        ]
        if labels and s["name"] == "logits":
            lines.append(f"    label_filename: {_string(labels)}")
        lines.append("  }," if i < len(specs) - 1 else "  }")
    return [*lines, "]"]


def config_text(
    name: str,
    desc: dict[str, Any],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    *,
    max_batch_size: int = 16,
    max_queue_delay_us: int = 100,
    labels_file: str | None = LABELS_FILE,
) -> str:
    """The ``config.pbtxt`` of a sed graph (:func:`tensor_specs`' ``inputs``/``outputs``, ``desc`` its
    description): batched when ``max_batch_size`` > 0 (every tensor's first dimension is then the batch,
    left out of ``dims``, and requests are batched dynamically within ``max_queue_delay_us``), else the
    graph's full shapes and no batching."""
    batched = max_batch_size > 0
    rate, clip = desc.get("sample_rate"), desc.get("clip_samples")
    head = [
        "# written by `sedkit export --format triton`: a sed clip classifier, front end inside the graph.",
        f"# Input {inputs[0]['name']!r}: mono float32 waveform at {rate} Hz, any length (the clip is "
        f"{clip} samples); outputs: {', '.join(repr(o['name']) for o in outputs)}.",
        "# For a GPU: instance_group [ { kind: KIND_GPU } ] (tritonserver with its onnxruntime backend).",
        f"name: {_string(name)}",
        f"platform: {_string(PLATFORM)}",
        f"max_batch_size: {max_batch_size}",
        *_tensors("input", inputs, batched, None),
        *_tensors("output", outputs, batched, labels_file),
    ]
    if batched:
        head += ["dynamic_batching {", f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    head += ["instance_group [", "  {", "    count: 1", "    kind: KIND_CPU", "  }", "]"]
    params = {
        "sed_model_name": desc.get("model_name"),
        "sed_sample_rate": rate,
        "sed_clip_samples": clip,
        "sed_multi_label": desc.get("multi_label"),
        "sed_precision": desc.get("precision"),
        "sed_num_labels": len(desc.get("labels") or []),
    }
    for key, value in params.items():
        if value is not None:
            text = json.dumps(value) if isinstance(value, bool) else str(value)
            head.append(f"parameters {{ key: {_string(key)} value {{ string_value: {_string(text)} }} }}")
    return "\n".join(head) + "\n"


def _check_target(out, name: str, overwrite: bool, inputs: list) -> Path:
    """``out/name`` when the entry may be written there, else one :class:`OutputError` line."""
    repo = check_output(out, kind="folder")
    target = repo / name
    if os.path.lexists(target):
        if not target.is_dir() or target.is_symlink():
            raise OutputError(target, "exists and is not a folder")
        if not overwrite:
            raise OutputError(target, "a model of that name is already in the repository; pass --overwrite")
        for item in inputs:
            if Path(os.path.abspath(item)).is_relative_to(os.path.abspath(target)):
                raise OutputError(target, f"holds the input {item}; refusing to replace it")
    return target


def _check_onnx(source, precision: str, opset, dynamic_batch):
    """The sed export ``source`` (an :class:`~sed.inference.runtime.OnnxModel`) if it can be packaged
    at ``precision``, else one line."""
    from sed.inference.runtime import OnnxModel

    if opset is not None or dynamic_batch is not None:
        raise UsageError(
            "--opset and --dynamic-batch do not apply to an .onnx checkpoint (it is packaged as it is); "
            "export from the PyTorch checkpoint to change them"
        )
    model = OnnxModel(source)  # a sed export, or one line saying why not
    if model.precision == "int8" and precision != "int8":
        raise CheckpointError(source, "is an int8 graph; pass --precision int8 to package it as it is")
    return model


def _package_onnx(source, graph: Path, precision: str, model) -> dict[str, Any]:
    """An exported ``.onnx`` checkpoint as the entry's graph: copied, or quantised for ``int8``."""
    from sed.export.quantize import quantize_onnx

    with output_errors(graph, any_file=True):
        graph.parent.mkdir(parents=True, exist_ok=True)
    if precision == "int8" and model.precision != "int8":
        quantize_onnx(source, graph)
    else:
        with output_errors(graph):
            shutil.copyfile(source, graph)
    return {"description": model.meta, "max_abs_diffs": {}}


def export_triton(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    precision: str = "fp32",
    opset: int | None = None,
    dynamic_batch: bool | None = None,
    max_batch_size: int = 16,
    max_queue_delay_us: int = 100,
    overwrite: bool = False,
    labels: Sequence[str] | None = None,
    template: str | None = None,
) -> dict[str, Any]:
    """Write the Triton repository entry ``out/<name>`` (``name`` None: :func:`default_name`) of the
    checkpoint ``source`` (see the module docstring). ``dynamic_batch`` (None: True) False exports batch 1,
    configured with ``max_batch_size: 0``. Returns ``{"path"`` (the entry), ``"name", "config", "model",
    "labels"`` (None without labels), ``"max_batch_size", "max_queue_delay_us"`` (None unbatched),
    ``"description", "inputs", "outputs", "opset", "max_abs_diffs"}`` (the graph vs PyTorch as
    :func:`~sed.export.onnx.export_checkpoint` measures; empty for an ``.onnx`` source). ``labels`` and
    ``template``: zero-shot classes of a CLAP source, as :func:`~sed.export.onnx.export_checkpoint`'s."""
    import onnx

    from sed.export.onnx import check_opset, export_checkpoint, written_opset
    from sed.inference.runtime import is_onnx

    name = check_name(default_name(source) if name is None else name)
    if type(max_batch_size) is not int or not 1 <= max_batch_size <= MAX_BATCH_SIZE:
        raise UsageError(
            f"max batch size {short(max_batch_size)} is not an integer from 1 to {MAX_BATCH_SIZE}"
        )
    if type(max_queue_delay_us) is not int or max_queue_delay_us < 0:
        raise UsageError(f"max queue delay {short(max_queue_delay_us)} is not a whole number of microseconds")
    if precision not in ("fp32", "int8"):
        raise UsageError(f"Triton export precision must be fp32 or int8, not {short(precision)}")
    # before any work: the options, the .onnx source, the destination
    if is_onnx(source) and labels is not None:
        raise UsageError(
            f"{source}: an exported graph has fixed classes; labels name the classes of a CLAP model"
        )
    onnx_model = _check_onnx(source, precision, opset, dynamic_batch) if is_onnx(source) else None
    if onnx_model is None:
        check_opset(opset)
    target = _check_target(out, name, overwrite, [source])
    with atomic_folder(target) as tmp:
        graph = tmp / "1" / "model.onnx"
        if onnx_model is not None:
            report = _package_onnx(source, graph, precision, onnx_model)
        else:
            report = export_checkpoint(
                source,
                graph,
                precision=precision,
                opset=opset,
                dynamic_batch=dynamic_batch is not False,
                labels=labels,
                template=template,
            )
        proto = onnx.load(str(graph), load_external_data=False)
        desc = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
        inputs, outputs = tensor_specs(proto)
        batched = all(s["dims"] and s["dims"][0] == -1 for s in inputs + outputs)
        labels = [str(label) for label in desc.get("labels") or []]
        if any(not printable(label) == label or not label for label in labels):
            raise CheckpointError(source, "a label is empty or holds a line break; labels.txt cannot hold it")
        if labels:
            with atomic_open(tmp / LABELS_FILE, encoding="utf-8") as f:
                f.write("".join(f"{label}\n" for label in labels))
        mbs = max_batch_size if batched else 0
        text = config_text(
            name,
            desc,
            inputs,
            outputs,
            max_batch_size=mbs,
            max_queue_delay_us=max_queue_delay_us,
            labels_file=LABELS_FILE if labels else None,
        )
        with atomic_open(tmp / "config.pbtxt", encoding="utf-8") as f:
            f.write(text)
    return {
        "path": target,
        "name": name,
        "config": target / "config.pbtxt",
        "model": target / "1" / "model.onnx",
        "labels": target / LABELS_FILE if labels else None,
        "max_batch_size": mbs,
        "max_queue_delay_us": max_queue_delay_us if mbs else None,
        "description": desc,
        "inputs": inputs,
        "outputs": outputs,
        "opset": written_opset(proto),
        "max_abs_diffs": report["max_abs_diffs"],
    }
