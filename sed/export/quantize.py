"""Dynamic int8 quantisation of the linear layers, for CPU inference (``--precision int8``).

- PyTorch: :func:`quantize_torch` replaces every ``nn.Linear`` with PyTorch's dynamically quantised
  linear layer (``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantised
  per batch on the fly). The front end, the convolutions and the norms stay float32.
- ONNX: :func:`quantize_onnx` runs ONNX Runtime's ``quantize_dynamic`` on the MatMul/Gemm nodes of
  the linear layers (after ``quant_pre_process``, which folds their weights into initializers); with
  ``attention="fused"`` the self-attention blocks of timm's form are first rewritten as
  ``com.microsoft.Attention`` (:mod:`sed.export.quantize_attention`) and quantised as ``QAttention``.
  The front end's mel matrix stays float32, and so do the attention products in every form (ONNX
  Runtime's ``QAttention`` kernel computes them in fp32; see that module for the measured reasons).
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

__all__ = ["ATTENTION_MODES", "quantize_onnx", "quantize_torch"]

#: how ``quantize_onnx`` treats attention: as exported (the default: measured no slower), or fused into
#: QAttention where the pattern matches
ATTENTION_MODES = ("fp32", "fused")


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


def quantize_onnx(src: str | os.PathLike, out: str | os.PathLike, attention: str = "fp32") -> Path:
    """Write the int8 version of the exported fp32 ONNX file ``src`` to ``out`` (atomically), its
    ``sed`` metadata kept with ``precision: int8``, ``int8_nodes`` (linear layers quantised) and
    ``int8_attention`` (attention blocks fused and quantised as ``QAttention`` with
    ``attention="fused"``; 0 with ``attention="fp32"``, the default, for a graph without attention, or
    one whose blocks are of another form)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from sed.export.quantize_attention import fuse_attention

    if attention not in ATTENTION_MODES:
        raise ValueError(f"int8 attention must be one of {', '.join(ATTENTION_MODES)}, not {attention!r}")
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        src_q = src
        fused_src, pre, q = Path(tmp) / "fused.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if attention == "fused":  # on the graph as exported (pre-processing moves its transposes)
                    proto = onnx.load(str(src))
                    if fuse_attention(proto):
                        onnx.save_model(proto, str(fused_src))
                        src_q = fused_src
                    del proto
                quant_pre_process(str(src_q), str(pre), skip_symbolic_shape=True)
                proto = onnx.load(str(pre), load_external_data=False)
                nodes = _linear_nodes(proto)
                blocks = [n.name for n in proto.graph.node if n.op_type == "Attention" and n.domain]
                del proto
                quantize_dynamic(
                    str(pre),
                    str(q),
                    weight_type=QuantType.QInt8,
                    nodes_to_quantize=nodes + blocks,
                    op_types_to_quantize=["MatMul", "Gemm", *(["Attention"] if blocks else [])],
                )
        except Exception as e:  # noqa: BLE001 - ONNX Runtime's tools raise their own errors
            raise CheckpointError(src, f"int8 quantisation failed: {one_line(e)}") from None
        proto = onnx.load(str(q))
        meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
        desc = {
            **json.loads(meta[METADATA_KEY]),
            "precision": "int8",
            "int8_nodes": len(nodes),
            "int8_attention": sum(n.op_type == "QAttention" for n in proto.graph.node),
        }
        del proto.metadata_props[:]
        proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(desc))
        atomic_save(out, lambda path: onnx.save_model(proto, path))
    return out
