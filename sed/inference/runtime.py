"""An exported ``.onnx`` classifier run by ONNX Runtime, behind the interface of a sed model.

:class:`OnnxModel` is what :class:`~sed.inference.classifier.Classifier` holds in place of a
PyTorch model for a ``.onnx`` checkpoint: ``model(wave, lengths)`` gives logits, ``model.embed(...)``
the pooled embedding, and it carries ``sample_rate``, ``clip_samples``, ``labels``,
``num_classes`` and ``multi_label`` from the file's ``sed`` metadata. The graph takes no
``lengths``: a batch whose clips have different valid lengths runs as one call per length, each
cropped to its length, so every clip gets exactly the logits it gets alone (zero padding would
change its features).

A file that is not an ONNX model, lacks the ``sed`` metadata, or whose graph is not what sed
exports (input ``waveform``; outputs ``logits`` and ``embedding`` of the described widths) is a
one-line :class:`~sed.errors.CheckpointError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sed.checkpoint import ONNX_INPUT as INPUT
from sed.checkpoint import ONNX_METADATA_KEY as METADATA_KEY
from sed.checkpoint import ONNX_OUTPUTS, check_description
from sed.errors import CheckpointError, one_line, short
from sed.models.base import length_groups

__all__ = ["OnnxModel", "is_onnx"]

LOGITS, EMBEDDING = ONNX_OUTPUTS


def is_onnx(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".onnx"


def _width(value_info) -> int | None:
    dims = value_info.shape
    return dims[-1] if dims and isinstance(dims[-1], int) else None


class OnnxModel:
    """An ONNX Runtime session with the interface the Classifier uses (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(self.path, "file not found")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: its warnings would break one-line reports
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own error types
            raise CheckpointError(self.path, f"not a readable ONNX model ({one_line(e)})") from None
        self.meta = self._description()
        self._check_graph()
        self.sample_rate = int(self.meta.get("sample_rate") or 16000)
        self.clip_samples = self.meta.get("clip_samples")
        #: the longest input scored in one piece (None: any), what clip mode cuts files to
        self.max_samples = self.meta.get("max_samples", self.clip_samples)
        #: the input lengths the graph was exported for: shorter clips are zero-padded to the shortest (as the
        #: PyTorch model pads them), longer ones refused in one line (a CED graph holds one chunk)
        self.input_samples = self._input_bounds()
        self.labels = list(self.meta.get("labels") or [])
        self.num_classes = int(self._outputs[LOGITS])
        self.multi_label = bool(self.meta.get("multi_label", False))
        self.precision = self.meta.get("precision", "fp32")

    def _description(self) -> dict[str, Any]:
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise CheckpointError(self.path, "an ONNX model without sed metadata (export it with sedkit export)")
        try:
            desc = json.loads(props[METADATA_KEY])
        except (ValueError, RecursionError) as e:
            raise CheckpointError(self.path, f"its 'sed' metadata is not JSON ({one_line(e)})") from None
        return check_description(desc, self.path)

    def _check_graph(self) -> None:
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != [INPUT]:
            raise CheckpointError(self.path, f"graph inputs {short(inputs)} are not [{INPUT!r}] (not a sed export)")
        outputs = {o.name: o for o in self.session.get_outputs()}
        if LOGITS not in outputs:
            raise CheckpointError(self.path, f"graph outputs {short(sorted(outputs))} lack {LOGITS!r} (not a sed export)")
        self._outputs = {name: _width(o) for name, o in outputs.items()}
        labels = self.meta.get("labels") or []
        width = self._outputs[LOGITS]
        if width is None or (labels and width != len(labels)):
            raise CheckpointError(self.path, f"the graph's logits have {width} classes but its metadata names "
                                             f"{len(labels)} labels (another model's graph?)")

    def _input_bounds(self) -> tuple[int, int | None]:
        bounds = self.meta.get("onnx_input_samples")
        if bounds is None:  # exported before the bounds were recorded
            return 1, None
        ok = isinstance(bounds, list) and len(bounds) == 2 and all(type(b) is int for b in bounds)
        if not ok or not 1 <= bounds[0] <= bounds[1]:
            raise CheckpointError(self.path, f"onnx_input_samples {short(bounds)} is not [shortest, longest] samples")
        return bounds[0], bounds[1]

    # ------------------------------------------------------------------ the model interface
    def _run(self, output: str, wave: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if output not in self._outputs:
            raise CheckpointError(self.path, f"the graph has no {output!r} output")
        x = wave.detach().float().cpu()
        x = x[None] if x.dim() == 1 else x
        out: list[np.ndarray | None] = [None] * x.shape[0]
        low, high = self.input_samples
        for length, rows in length_groups(lengths, x.shape[0], x.shape[-1]):
            if high is not None and length > high:
                raise CheckpointError(self.path, f"the graph takes at most {high} samples ({high / self.sample_rate:.2f} s) "
                                                 f"in one piece, got {length}; use shorter windows (--window)")
            part = x[rows, :length]
            if length < low:
                part = torch.nn.functional.pad(part, (0, low - length))
            batch = np.ascontiguousarray(part.numpy())
            for i, y in zip(rows, self.session.run([output], {INPUT: batch})[0]):
                out[i] = y
        return torch.from_numpy(np.stack(out))

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(LOGITS, wave, lengths)

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(EMBEDDING, wave, lengths)

    def to(self, device) -> OnnxModel:  # noqa: ARG002 - runs where ONNX Runtime runs (the CPU)
        return self

    def eval(self) -> OnnxModel:
        return self
