"""The LitAPI of ``sedkit serve``: what each inference worker (a process) does with a batch of uploads.

``setup`` loads the checkpoint(s) once per worker, as ``sedkit classify`` does. ``decode_request`` writes an
upload to a private temporary file and checks its header (readable audio, at most ``max_seconds``), so the
audio is read exactly as ``classify`` reads a file (:func:`sed.audio.io.load_audio`: soundfile, resampled to
the model's rate, down-mixed). ``predict`` scores the requests of one LitServe batch together: those that
ask the same thing (clip scores with one ``function_to_apply``, or windows of one size) go through one
:meth:`~sed.inference.classifier.Classifier.score` call, so through the model as one batch.

A request that fails (bad audio, detect on a clip model) does not fail its batch: its answer is an error
(``{"error", "status"}``) that the HTTP process turns into the response. Every answer also carries, under
``"_batch"``, which batch it came in and that batch's size (what ``GET /stats`` counts).
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import litserve as ls

from sed.errors import SedError, one_line, printable
from sed.inference.classifier import Classifier
from sed.inference.predictor import load_predictor
from sed.models.zeroshot import DEFAULT_TEMPLATE
from sed.serve.answers import answer, spectrogram

__all__ = ["SedAPI", "load_scorer"]


class _Scorer(Classifier):
    """A Classifier that can also answer ``function_to_apply=none``: the model's logits as they are."""

    def _scores(self, logits, multi_label):
        if multi_label == "none":
            return logits.float()
        return super()._scores(logits, multi_label)


def load_scorer(
    checkpoints, ensemble=None, weights=None, device="auto", precision="fp32", labels=None, template=None
):
    """:func:`~sed.inference.predictor.load_predictor` with members that can also give logits (``labels``:
    the zero-shot classes of CLAP members, prompted with ``template``, by default the pipeline's)."""
    return load_predictor(
        checkpoints,
        ensemble,
        weights,
        device,
        precision,
        member=_Scorer,
        labels=labels,
        template=template or DEFAULT_TEMPLATE,
    )


class SedAPI(ls.LitAPI):
    """``predict`` of a batch of ``{"name", "data", "params"}`` payloads (built by :mod:`sed.serve.app`)."""

    def __init__(self, model: dict[str, Any], max_seconds: float, **kwargs):
        super().__init__(**kwargs)
        self.model_args, self.max_seconds = dict(model), float(max_seconds)
        self.batches = 0

    def setup(self, device: str) -> None:
        # Ctrl-C reaches every process of the terminal's group: the main process stops the workers
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        args = dict(self.model_args)
        if args.get("device", "auto") in ("auto", "cuda") and str(device).startswith("cuda"):
            args["device"] = device  # LitServe's device of this worker (cuda:N: workers spread over the GPUs)
        self.clf = load_scorer(**args)
        self.detector = None
        model = getattr(self.clf, "model", None)
        from sed.models.frames import is_frame_model

        if model is not None and is_frame_model(model):
            from sed.inference.detect import Detector

            self.detector = Detector(model, self.clf.meta, device=str(self.clf.device))
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------ per request
    def decode_request(self, request: dict) -> dict[str, Any]:
        """The upload on disk, its header read; or the request's error."""
        from sed.audio.io import info

        name, params = str(request.get("name") or "upload"), dict(request.get("params") or {})
        suffix = Path(name).suffix.lower()
        item: dict[str, Any] = {"name": name, "path": None, "params": params}
        try:  # a private file (0600), removed after the batch
            fd, tmp = tempfile.mkstemp(
                prefix="sedkit-serve-", suffix=suffix if re.fullmatch(r"\.[a-z0-9]{1,6}", suffix) else ""
            )
            item["path"] = path = Path(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(request["data"])
            head = info(path)
        except SedError as e:
            return {**item, "error": _renamed(e, path, name)}
        except OSError as e:
            return {
                **item,
                "error": f"{printable(name)}: cannot store the upload ({one_line(e)})",
                "status": 500,
            }
        item["duration"] = head.duration
        if head.duration > self.max_seconds:
            item["error"] = (
                f"{printable(name)}: {head.duration:.1f} s is longer than the service takes "
                f"(max {self.max_seconds:g} s)"
            )
        elif params.get("detect") and self.detector is None:
            item["error"] = (
                "detect needs a frame model (one with frame outputs); this checkpoint gives clip scores"
            )
        elif params.get("function_to_apply") == "none" and not hasattr(self.clf, "model"):
            item["error"] = "function_to_apply=none: an ensemble combines probabilities, not logits"
        return item

    def predict(self, items: list[dict[str, Any]] | dict[str, Any]) -> list[dict[str, Any]] | dict[str, Any]:
        if isinstance(items, dict):  # --max-batch-size 1: LitServe's unbatched loop hands one request
            return self.predict([items])[0]
        self.batches += 1
        tag = [self.worker, self.batches, len(items)]
        out: list[dict[str, Any]] = [{} for _ in items]
        try:
            groups: dict[tuple, list[int]] = defaultdict(list)
            for i, it in enumerate(items):
                if "error" in it:
                    out[i] = {"error": it["error"], "status": it.get("status", 400)}
                    continue
                p = it["params"]
                groups[(_how(p.get("function_to_apply")), p.get("window"), p.get("hop"))].append(i)
            for (how, window, hop), idx in groups.items():
                try:
                    results = self.clf.score(
                        [items[i]["path"] for i in idx],
                        window=window,
                        hop=hop,
                        batch_size=max(1, len(idx)),
                        multi_label=how,
                    )
                except ValueError as e:  # a window shorter than a sample
                    results = [e] * len(idx)
                for i, r in zip(idx, results):
                    out[i] = self._answer(items[i], r)
        finally:
            for it in items:
                if it["path"] is not None:
                    it["path"].unlink(missing_ok=True)
        for o in out:
            o["_batch"] = tag
        return out

    def _answer(self, item: dict[str, Any], result) -> dict[str, Any]:
        name, path, params = item["name"], item["path"], item["params"]
        if isinstance(result, Exception):
            return {"error": one_line(result), "status": 400}
        if result.error:
            return {"error": _renamed(result.error, path, name), "status": 400}
        extra: dict[str, Any] = {}
        try:
            if params.get("detect"):
                det = next(
                    iter(
                        self.detector.detect(
                            [path], thresholds=params.get("threshold", 0.5), median=params.get("median", 0.0)
                        )
                    )
                )
                if det.error:
                    return {"error": _renamed(det.error, path, name), "status": 400}
                extra["events"] = [
                    {"onset": round(float(a), 6), "offset": round(float(b), 6), "label": lab}
                    for a, b, lab in det.events
                ]
            if params.get("spectrogram"):
                extra["spectrogram"] = spectrogram(path, self.clf.sample_rate)
        except SedError as e:
            return {"error": _renamed(e, path, name), "status": 400}
        return answer(self.clf, result, params, item["duration"], extra)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


def _how(function: str | None):
    """``multi_label`` of Classifier.score for a ``function_to_apply`` (None: the checkpoint's own)."""
    return {None: None, "softmax": False, "sigmoid": True, "none": "none"}[function]


def _renamed(err, path: Path, name: str) -> str:
    """An error about the temporary file, told about the upload (its filename, or "upload")."""
    text = str(err)
    return printable(text.replace(printable(str(path)), printable(name)).replace(str(path), name))
