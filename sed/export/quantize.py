"""Dynamic int8 quantisation of the linear layers, for CPU inference (``--precision int8``).

- PyTorch: :func:`quantize_torch` replaces every ``nn.Linear`` with PyTorch's dynamically quantised
  linear layer (``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantised
  per batch on the fly). The front end, the convolutions and the norms stay float32.
- ONNX: :func:`quantize_onnx` runs ONNX Runtime's ``quantize_dynamic`` on the MatMul/Gemm nodes of
  the linear layers (after ``quant_pre_process``, which folds their weights into initializers);
  the front end's mel matrix and the attention products of activations stay float32.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from sed.checkpoint import ONNX_METADATA_KEY as METADATA_KEY
from sed.errors import CheckpointError, one_line
from sed.fileio import atomic_save

__all__ = ["quantize_onnx", "quantize_torch"]


def quantize_torch(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (on the CPU) with int8 dynamically quantised ``nn.Linear`` layers."""
    import copy

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantized-tensor deprecation notice
        q = quantize_dynamic(copy.deepcopy(model).cpu().float().eval(), {nn.Linear}, dtype=torch.qint8)
    q.sed_precision = "int8"
    return q


def _linear_nodes(model) -> list[str]:
    """MatMul/Gemm nodes that multiply by a weight initializer, except the front end's."""
    weights = {i.name for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm")
        and len(n.input) > 1
        and n.input[1] in weights
        and "frontend" not in n.input[1]
    ]


def quantize_onnx(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the int8 version of the exported fp32 ONNX file ``src`` to ``out`` (atomically), its
    ``sed`` metadata kept with ``precision: int8``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                nodes = _linear_nodes(onnx.load(str(pre), load_external_data=False))
                quantize_dynamic(
                    str(pre),
                    str(q),
                    weight_type=QuantType.QInt8,
                    nodes_to_quantize=nodes,
                    op_types_to_quantize=["MatMul", "Gemm"],
                )
        except Exception as e:  # noqa: BLE001 - ONNX Runtime's tools raise their own errors
            raise CheckpointError(src, f"int8 quantisation failed: {one_line(e)}") from None
        proto = onnx.load(str(q))
        meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
        desc = {**json.loads(meta[METADATA_KEY]), "precision": "int8", "int8_nodes": len(nodes)}
        del proto.metadata_props[:]
        proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(desc))
        atomic_save(out, lambda path: onnx.save_model(proto, path))
    return out
