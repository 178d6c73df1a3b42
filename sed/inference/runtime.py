"""An exported ``.onnx`` classifier run by ONNX Runtime, behind the interface of a sed model.

:class:`OnnxModel` is what :class:`~sed.inference.classifier.Classifier` holds in place of a
PyTorch model for a ``.onnx`` checkpoint: ``model(wave, lengths)`` gives logits, ``model.embed(...)``
the pooled embedding, and it carries ``sample_rate``, ``clip_samples``, ``labels``,
``num_classes`` and ``multi_label`` from the file's ``sed`` metadata. The graph takes no
``lengths``: a batch whose clips have different valid lengths runs as one call per length, each
cropped to its length, so every clip gets exactly the logits it gets alone (zero padding would
change its features).

A graph with a fixed batch (``sedkit export --no-dynamic-batch``) runs its fixed batch at a time, the
last call of a group padded with zero rows, so it gives exactly what the dynamic graph gives; a graph
with a fixed sample count takes clips padded to it, and clip mode cuts files to it.

A file that is not an ONNX model, lacks the ``sed`` metadata, or whose graph is not what sed
exports (input ``waveform``, float ``[batch, samples]``, its fixed sizes possible and within the
described input lengths; outputs ``logits`` and ``embedding``, float ``[batch, width]``, of the
described widths) is a one-line :class:`~sed.errors.CheckpointError` at load time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from sed.checkpoint import ONNX_INPUT as INPUT
from sed.checkpoint import ONNX_METADATA_KEY as METADATA_KEY
from sed.checkpoint import ONNX_OUTPUTS, check_description
from sed.errors import CheckpointError, one_line, printable, short
from sed.models.base import length_groups

__all__ = ["OnnxModel", "is_onnx"]

LOGITS, EMBEDDING = ONNX_OUTPUTS


def is_onnx(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".onnx"


#: the largest fixed batch a graph may declare, and the most bytes of waveform one call may be padded to
MAX_FIXED_BATCH, MAX_CALL_BYTES = 1024, 256 << 20
#: the element types of the outputs (cast to float32), and of the input sed feeds
FLOAT_OUTPUTS, FLOAT_INPUT = ("tensor(float)", "tensor(float16)", "tensor(double)"), "tensor(float)"
#: the longest input of a graph whose metadata records no bounds: an hour at its rate
MAX_SECONDS = 3600


def _fixed(dim) -> int | None:
    """A dimension ONNX Runtime reports: its size when fixed, None when dynamic (a name, or unknown)."""
    return dim if isinstance(dim, int) else None


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
        try:  # ONNX Runtime prints its provider fallbacks to stdout, where they would break the JSON output
            with contextlib.redirect_stdout(io.StringIO()):
                self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            # the names, shapes and metadata decoded once (a name or value that is not UTF-8 fails here)
            self._inputs, self._graph_outputs = (
                [SimpleNamespace(name=n.name, type=n.type, shape=list(n.shape)) for n in nodes]
                for nodes in (self.session.get_inputs(), self.session.get_outputs())
            )
            self._props = self.session.get_modelmeta().custom_metadata_map
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own error types
            raise CheckpointError(self.path, f"not a readable ONNX model ({one_line(e)})") from None
        self.meta = self._description()
        self.sample_rate = int(self.meta.get("sample_rate") or 16000)
        self.clip_samples = self.meta.get("clip_samples")
        #: the longest input scored in one piece (None: any), what clip mode cuts files to
        self.max_samples = self.meta.get("max_samples", self.clip_samples)
        #: the input lengths the graph was exported for: shorter clips are zero-padded to the shortest (as the
        #: PyTorch model pads them), longer ones refused in one line (a CED graph holds one chunk)
        self.input_samples = self._input_bounds()
        #: the graph's fixed batch (None: dynamic): a batch runs this many rows at a time
        self.batch: int | None = None
        self._check_graph()
        self.labels = list(self.meta.get("labels") or [])
        self.num_classes = int(self._outputs[LOGITS])
        self.multi_label = bool(self.meta.get("multi_label", False))
        self.precision = self.meta.get("precision", "fp32")

    def _description(self) -> dict[str, Any]:
        props = self._props
        if METADATA_KEY not in props:
            raise CheckpointError(
                self.path, "an ONNX model without sed metadata (export it with sedkit export)"
            )
        try:
            desc = json.loads(props[METADATA_KEY])
        except (ValueError, RecursionError) as e:
            raise CheckpointError(self.path, f"its 'sed' metadata is not JSON ({one_line(e)})") from None
        return check_description(desc, self.path)

    def _check_graph(self) -> None:
        inputs = self._inputs
        if [i.name for i in inputs] != [INPUT]:
            raise CheckpointError(
                self.path,
                f"graph inputs {short([i.name for i in inputs])} are not [{INPUT!r}] (not a sed export)",
            )
        outputs = {o.name: o for o in self._graph_outputs}
        if LOGITS not in outputs:
            raise CheckpointError(
                self.path, f"graph outputs {short(sorted(outputs))} lack {LOGITS!r} (not a sed export)"
            )
        labels = self.meta.get("labels") or []
        width = _fixed(outputs[LOGITS].shape[-1]) if outputs[LOGITS].shape else None
        if width is None or (labels and width != len(labels)):
            raise CheckpointError(
                self.path,
                f"the graph's logits have {width} classes but its metadata names "
                f"{len(labels)} labels (another model's graph?)",
            )
        self.batch = self._check_input(inputs[0])
        self._outputs = {name: self._check_output(o) for name, o in outputs.items() if name in ONNX_OUTPUTS}

    def _check_input(self, node) -> int | None:
        """The fixed batch of the ``waveform`` input (None: dynamic), after checking it is a float
        ``[batch, samples]`` whose fixed sizes are possible; a fixed sample count becomes the input bounds."""
        if node.type != FLOAT_INPUT:
            raise CheckpointError(
                self.path, f"the graph's {INPUT!r} is {printable(node.type)}, not float (not a sed export)"
            )
        if len(node.shape) != 2:
            raise CheckpointError(
                self.path, f"the graph's {INPUT!r} has {len(node.shape)} dimensions, not 2 ([batch, samples])"
            )
        batch, samples = (_fixed(d) for d in node.shape)
        if batch is not None and not 1 <= batch <= MAX_FIXED_BATCH:
            raise CheckpointError(
                self.path,
                f"the graph's {INPUT!r} has a fixed batch of {batch} (possible: 1 to {MAX_FIXED_BATCH})",
            )
        if samples is not None:
            low, high = self.input_samples
            high = high if high is not None else MAX_SECONDS * self.sample_rate
            if not low <= samples <= high:
                raise CheckpointError(
                    self.path,
                    f"the graph's {INPUT!r} takes {samples} samples, outside the "
                    f"{low} to {high} its metadata describes",
                )
            self.input_samples = (samples, samples)
            self.max_samples = min(self.max_samples or samples, samples)
        padded = (batch or 1) * self.input_samples[0] * 4
        if padded > MAX_CALL_BYTES:
            raise CheckpointError(
                self.path,
                f"the graph's fixed input sizes take {padded >> 20} MiB per call "
                f"(at most {MAX_CALL_BYTES >> 20} MiB)",
            )
        return batch

    def _check_output(self, node) -> int | None:
        """The fixed width of an output, after checking it is a float ``[batch, width]`` of the input's
        batch."""
        if node.type not in FLOAT_OUTPUTS:
            raise CheckpointError(
                self.path,
                f"the graph's {node.name!r} are {printable(node.type)}, not float (not a sed export)",
            )
        if len(node.shape) != 2:
            raise CheckpointError(
                self.path,
                f"the graph's {node.name!r} have {len(node.shape)} dimensions, not 2 ([batch, width])",
            )
        batch, width = (_fixed(d) for d in node.shape)
        if batch is not None and batch != self.batch:
            raise CheckpointError(
                self.path,
                f"the graph's {node.name!r} have a batch of {batch}, its input "
                f"{'a dynamic one' if self.batch is None else self.batch}",
            )
        if width is not None and width < 1:
            raise CheckpointError(self.path, f"the graph's {node.name!r} have width {width}")
        return width

    def _input_bounds(self) -> tuple[int, int | None]:
        bounds = self.meta.get("onnx_input_samples")
        if bounds is None:  # exported before the bounds were recorded
            return 1, None
        ok = isinstance(bounds, list) and len(bounds) == 2 and all(type(b) is int for b in bounds)
        if not ok or not 1 <= bounds[0] <= bounds[1]:
            raise CheckpointError(
                self.path, f"onnx_input_samples {short(bounds)} is not [shortest, longest] samples"
            )
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
                raise CheckpointError(
                    self.path,
                    f"the graph takes at most {high} samples ({high / self.sample_rate:.2f} s) "
                    f"in one piece, got {length}; use shorter windows (--window)",
                )
            part = x[rows, :length]
            if length < low:
                part = torch.nn.functional.pad(part, (0, low - length))
            for i, y in zip(rows, self._session_run(output, part.numpy())):
                out[i] = y
        return torch.from_numpy(np.stack(out).astype(np.float32, copy=False))

    def _session_run(self, output: str, batch: np.ndarray) -> np.ndarray:
        """``output`` of ``batch`` (rows of one length): one call, or, for a graph of fixed batch, one call
        per that many rows, the last padded with zero rows (rows never mix, so padding changes nothing)."""
        step = self.batch or max(len(batch), 1)
        parts = []
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            if len(chunk) < step:
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), chunk.shape[1]), chunk.dtype)])
            try:
                got = self.session.run([output], {INPUT: np.ascontiguousarray(chunk)})[0]
            except Exception as e:  # noqa: BLE001 - a graph that loads but cannot run what it declares it takes
                raise CheckpointError(
                    self.path, f"ONNX Runtime cannot run the graph on {list(chunk.shape)} ({one_line(e)})"
                ) from None
            if got.ndim != 2 or len(got) != step:
                raise CheckpointError(
                    self.path,
                    f"the graph gave {output!r} of shape {list(got.shape)} for a batch "
                    f"of {step} (not [batch, width])",
                )
            parts.append(got)
        return np.concatenate(parts)[: len(batch)]

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(LOGITS, wave, lengths)

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(EMBEDDING, wave, lengths)

    def to(self, device) -> OnnxModel:  # noqa: ARG002 - runs where ONNX Runtime runs (the CPU)
        return self

    def eval(self) -> OnnxModel:
        return self
