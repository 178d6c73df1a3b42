"""A clip classifier as one ONNX graph with its front end inside (``sedkit export --format onnx``).

The graph takes ``waveform`` (float32 ``[batch, samples]``, mono at the checkpoint's sample rate; the
sample count is dynamic, the batch dynamic unless exported with a fixed batch) and returns
``logits`` (``[batch, classes]``) and ``embedding`` (``[batch, D]``, the pooled embedding). The
Kaldi fbank, its padding or cropping to the clip's frames and the normalisation are in the graph
(:meth:`~sed.audio.features.KaldiFbank.fbank_graph`, the FFT as ONNX's DFT), so the file needs
neither sed nor torch: a clip of any length gives exactly the logits the PyTorch model gives it.

The checkpoint's description (labels, sample rate, clip length, multi-label flag, model name and
kwargs) is stored as JSON under the key ``sed`` of the file's ``metadata_props``, with
``onnx_inputs``, ``onnx_outputs`` and ``precision`` added. The exporter is torch's own
(``torch.onnx.export(dynamo=True)``), and the written file passes ``onnx.checker``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sed.checkpoint import ONNX_INPUT as INPUT
from sed.checkpoint import ONNX_METADATA_KEY as METADATA_KEY
from sed.checkpoint import ONNX_OUTPUTS as OUTPUTS
from sed.checkpoint import describe
from sed.errors import CheckpointError, UsageError, one_line, short
from sed.export.clap import fused_clap_export
from sed.fileio import atomic_save

__all__ = [
    "INPUT",
    "METADATA_KEY",
    "OUTPUTS",
    "check_inputs",
    "check_opset",
    "export_checkpoint",
    "export_onnx",
    "onnx_description",
    "supported_opsets",
]

DEFAULT_OPSET = 23  # ONNX's Attention op (opset 23): ONNX Runtime runs AST ~5-10 % faster than at 18
#: the longest input the graph is declared for: one hour at the model's rate
MAX_SECONDS = 3600


class _Graph(nn.Module):
    """What is exported: waveform -> (logits, pooled embedding) of a clip classifier."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.model.embed(waveform)
        if getattr(self.model, "frame_pooling", None) is not None:  # a frame model: its pooled clip logits
            return self.model(waveform), pooled
        return self.model.head(pooled), pooled


def _check_exportable(model: nn.Module, source) -> None:
    from sed.models.base import is_clip_model  # as load_model below: sed.models is imported on first use

    if not is_clip_model(model):
        raise CheckpointError(
            source,
            f"{type(model).__name__} is not a mono clip classifier with a waveform front end "
            "(ONNX export takes the AST family and the CNN students)",
        )


def onnx_description(model: nn.Module, precision: str = "fp32", **meta: Any) -> dict[str, Any]:
    """The ``sed`` metadata of an exported model: its checkpoint description plus the graph's names."""
    return describe(model, onnx_inputs=[INPUT], onnx_outputs=list(OUTPUTS), precision=precision, **meta)


def input_bounds(model: nn.Module) -> tuple[int, int]:
    """(shortest, longest) waveform the exported graph takes: from one feature frame (one patch for the
    models that pad shorter clips to a patch in PyTorch) to an hour, or a CED chunk."""
    low = int(getattr(model, "patch_samples", model.frontend.win))
    high = int(getattr(model, "onnx_max_samples", MAX_SECONDS * int(model.sample_rate)))
    return low, high


def supported_opsets() -> tuple[int, int]:
    """(lowest, highest) ai.onnx opset torch's exporter writes as asked. Below its own opset (torchlib's)
    it exports at that one and tries a version conversion, which fails on sed's graphs (and then keeps
    its own); above its declared maximum it has no implementations."""
    try:
        from torch.onnx import _constants
        from torch.onnx._internal.exporter import _constants as exporter

        return int(exporter.TORCHLIB_OPSET), int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):  # private names that may move: torch 2.9's values
        return 18, 23


def check_opset(opset: int | None) -> int:
    """``opset`` (None: :data:`DEFAULT_OPSET`) if torch's exporter writes it, else a :class:`UsageError`."""
    if opset is None:
        return DEFAULT_OPSET
    low, high = supported_opsets()
    if type(opset) is not int or not low <= opset <= high:
        raise UsageError(
            f"ONNX opset {short(opset)} is not supported: torch's exporter writes opsets {low} to {high}"
        )
    return opset


def written_opset(proto) -> int | None:
    """The ai.onnx opset a model proto imports (what a runtime needs), None when it imports none."""
    versions = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    return max(versions) if versions else None


def check_inputs(model: nn.Module, dynamic_batch: bool = True) -> torch.Tensor:
    """The clips an export is traced on and checked against PyTorch with: ``[2, n]`` (``[1, n]`` for a
    fixed batch) of seeded noise, ``n`` the model's clip length within the graph's input bounds."""
    low, high = input_bounds(model)
    n = min(max(int(model.clip_samples), low), high)
    return 0.1 * torch.randn(2 if dynamic_batch else 1, n, generator=torch.Generator().manual_seed(0))


def _exported_program(model: nn.Module, opset: int, dynamic_batch: bool):
    low, high = input_bounds(model)
    example = check_inputs(model, dynamic_batch)
    samples = torch.export.Dim("samples", min=low, max=high)
    shapes = {
        INPUT: {0: torch.export.Dim("batch", min=1, max=65536), 1: samples} if dynamic_batch else {1: samples}
    }
    with warnings.catch_warnings(), fused_clap_export(model) as fused:
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        graph = _Graph(model).eval()
        if fused:  # transformers' len() of the long-clip indices: non-strict tracing fixes the batch size
            graph = torch.export.export(graph, (example,), dynamic_shapes=shapes, strict=True)
        return torch.onnx.export(
            graph,
            (example,),
            None,
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_shapes=None if fused else shapes,
            verbose=False,
        ), example


def export_onnx(
    model: nn.Module,
    out: str | os.PathLike,
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
    source: str | os.PathLike | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model`` (a clip classifier from :func:`sed.models.load_model`) as ONNX to ``out``
    atomically (``opset`` None: :data:`DEFAULT_OPSET`; one torch's exporter cannot write is a
    :class:`UsageError`); returns ``{"path", "max_abs_diff", "max_abs_diffs", "description", "opset"}``,
    where ``max_abs_diff`` is the largest |logit difference| between onnxruntime and PyTorch on
    :func:`check_inputs` (``max_abs_diffs``: the same per graph precision, here ``{"fp32": ...}``) and
    ``opset`` the ai.onnx opset the file holds."""
    import onnx

    opset = check_opset(opset)
    _check_exportable(model, source)
    model = model.float().eval()
    try:
        program, example = _exported_program(model, opset, dynamic_batch)
    except Exception as e:  # noqa: BLE001 - the exporter fails in many ways on models it cannot take
        raise CheckpointError(source, f"torch.onnx.export failed: {one_line(e)}") from None
    proto = program.model_proto
    # the description's bounds: the graph's shortest input, and the longest it scores in one piece
    longest = getattr(model, "max_samples", model.clip_samples)
    if hasattr(model, "onnx_max_samples"):
        longest = min(model.onnx_max_samples, longest or model.onnx_max_samples)
    bounds = {"onnx_input_samples": list(input_bounds(model)), "max_samples": longest}
    desc = onnx_description(
        model,
        **({"exported_from": os.fspath(source)} if source is not None else {}),
        **bounds,
        **(meta or {}),
    )
    del proto.metadata_props[:]
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(desc))
    onnx.checker.check_model(proto, full_check=True)
    out = Path(out)
    atomic_save(out, lambda tmp: onnx.save_model(proto, tmp))
    diff = max_logit_diff(out, model, example)
    return {
        "path": out,
        "max_abs_diff": diff,
        "max_abs_diffs": {"fp32": diff},
        "description": desc,
        "opset": written_opset(proto),
    }


def max_logit_diff(path: str | os.PathLike, model: nn.Module, wave: torch.Tensor) -> float:
    """max |onnxruntime logits - PyTorch logits| of ``wave`` (a self-check of an export)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUTS[0]], {INPUT: wave.numpy()})[0]
    with torch.inference_mode():
        ref = model(wave).float().numpy()
    return float(abs(got - ref).max())


def export_checkpoint(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    precision: str = "fp32",
    opset: int | None = None,
    dynamic_batch: bool = True,
    int8_attention: str = "fp32",
    labels: Sequence[str] | None = None,
    template: str | None = None,
) -> dict[str, Any]:
    """``sedkit export``: any checkpoint :func:`sed.models.loading.load_model` reads, as an ONNX file
    (``precision="int8"``: the fp32 export, then ONNX Runtime's dynamic int8 quantisation of its
    linear layers, its attention blocks fused into ``QAttention`` with ``int8_attention="fused"``:
    :func:`sed.export.quantize.quantize_onnx`). Returns :func:`export_onnx`'s report; for int8,
    ``max_abs_diff`` is the int8 graph's, ``max_abs_diffs`` holds both graphs', measured on the same
    clips, and ``description`` is the int8 file's (with ``int8_nodes`` and ``int8_attention``).
    ``labels``: zero-shot classes named by text of a CLAP source, prompted with ``template`` (None: the
    default; :func:`sed.models.zeroshot.zero_shot_classifier`), their text embeddings baked into the graph;
    the description's ``zero_shot`` names the source and the template."""
    import tempfile

    import onnx

    from sed.export.quantize import ATTENTION_MODES, quantize_onnx
    from sed.models.loading import load_model
    from sed.models.zeroshot import DEFAULT_TEMPLATE, zero_shot_classifier

    if precision not in ("fp32", "int8"):
        raise ValueError(f"ONNX export precision must be fp32 or int8, not {precision!r}")
    if int8_attention not in ATTENTION_MODES:
        raise ValueError(
            f"int8 attention must be one of {', '.join(ATTENTION_MODES)}, not {int8_attention!r}"
        )
    opset = check_opset(opset)  # before the checkpoint is read
    meta = None
    if labels is not None:
        template = DEFAULT_TEMPLATE if template is None else template
        model = zero_shot_classifier(source, labels, template)
        meta = {"zero_shot": model.zero_shot}
    elif template is not None:
        raise ValueError("a template needs labels (zero-shot classes named by text)")
    else:
        model, _ = load_model(source, kind="clip")
    kw = {"opset": opset, "dynamic_batch": dynamic_batch, "source": source, "meta": meta}
    if precision == "fp32":
        return export_onnx(model, out, **kw)
    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(model, Path(tmp) / "fp32.onnx", **kw)
        path = quantize_onnx(report["path"], out, attention=int8_attention)
    diff = max_logit_diff(path, model, check_inputs(model, dynamic_batch))
    proto = onnx.load(str(path), load_external_data=False)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    return {
        **report,
        "description": meta,
        "path": path,
        "max_abs_diff": diff,
        "max_abs_diffs": {**report["max_abs_diffs"], "int8": diff},
        "opset": written_opset(proto),
    }
