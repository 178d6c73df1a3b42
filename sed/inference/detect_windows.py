"""Detection with a clip model: its window scores as a timeline, then the events of every detector.

A clip model (any classifier ``sedkit classify`` takes: a checkpoint, an exported ``.onnx`` graph, or a
CLAP model with classes named by text, zero-shot) scores windows of ``window`` seconds every ``hop``
seconds (:meth:`sed.inference.classifier.Classifier.score`'s window mode, read block-wise). Window ``i``
starts at ``i * hop`` and becomes frame ``i`` of a timeline at the hop:

- **placement**: window ``i``'s scores hold on the hop-long stretch centred on the window's centre,
  ``[i * hop + (window - hop) / 2, i * hop + (window + hop) / 2)`` (``offset = (window - hop) / 2``). A
  class is active on a frame when the window centred there scores above its threshold, so for an event
  longer than the window and a score that follows the share of the window the event fills, the event's
  onset and offset come out within ``hop / 2`` (``tests/inference/test_detect_windows.py``). The last
  window of a file may be shorter (the tail, as in ``classify``); it stays frame ``i``, on the same grid.
- **post-processing**: the frame path's own (:meth:`sed.inference.detect.Timeline.detect`): per-class
  median filters (seconds -> frames at the hop), thresholds (``p > t``), merge gap, then min duration.
- **edges**: the first frame starts ``(window - hop) / 2`` after the file's start and the last one need not
  end at the file's end; an event touching the first frame starts at 0 and one touching the last frame
  ends at the file's duration, so the whole file is covered and a file shorter than one window is one
  frame spanning it (min duration is judged before this extension). Score files (``--scores-dir``) keep
  the regular grid (frame ``i`` at ``offset + [i, i + 1) * hop``).

Scores are the classifier's: softmax for a single-label model (a zero-shot CLAP classifier's softmax over
its labels: the thresholds apply to it, so a class wins a window against the others), sigmoid for a
multi-label one. A frame model is refused (its frames already are a timeline: :class:`Detector`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from sed.errors import AudioError, CheckpointError
from sed.inference.classifier import Classifier
from sed.inference.detect import Detector, Timeline
from sed.models.frames import is_frame_model
from sed.models.zeroshot import DEFAULT_TEMPLATE

__all__ = ["WindowDetector", "load_detector"]

_TOL = 1e-6


class WindowDetector(Timeline):
    """A clip classifier's window scores as a detection timeline (module docstring).

    >>> det = WindowDetector.from_pretrained("clap-htsat-unfused", window=1.0, hop=0.25,
    ...                                      labels=["dog barking", "siren"])          # doctest: +SKIP
    >>> [d.events for d in det.detect(["street.wav"], thresholds=0.6)]                 # doctest: +SKIP
    """

    def __init__(self, classifier: Classifier, window: float, hop: float | None = None, batch_size: int = 8):
        hop = window if hop is None else hop
        if not (window > 0 and hop > 0):
            raise ValueError("the window and the hop must be positive seconds")
        if hop > window:
            raise ValueError(
                f"hop {hop:g} s is longer than the window {window:g} s: audio between windows is not scored"
            )
        rate = classifier.sample_rate
        if abs(round(hop * rate) - hop * rate) > _TOL or abs(round(window * rate) - window * rate) > _TOL:
            raise ValueError(
                f"window {window:g} s and hop {hop:g} s must be whole numbers of samples at {rate} Hz"
            )
        longest = classifier.max_samples
        if longest and round(window * rate) > longest:
            raise ValueError(f"window {window:g} s is longer than the model takes ({longest / rate:g} s)")
        self.classifier, self.window, self.hop = classifier, float(window), float(hop)
        self.sample_rate, self.batch_size = rate, max(1, int(batch_size))
        self.labels = [classifier._label(i) for i in range(_num_classes(classifier))]
        self.offset = (self.window - self.hop) / 2

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        window: float,
        hop: float | None = None,
        labels: Sequence[str] | None = None,
        template: str = DEFAULT_TEMPLATE,
        device: str = "auto",
        precision: str = "fp32",
        batch_size: int = 8,
    ) -> WindowDetector:
        """The window detector of any clip checkpoint :meth:`Classifier.from_pretrained` takes (``labels``:
        zero-shot classes of a CLAP model, prompted with ``template``); a frame model is one
        :class:`CheckpointError` (detect with its frames, :class:`Detector`)."""
        clf = Classifier.from_pretrained(
            source, device=device, precision=precision, labels=labels, template=template
        )
        if is_frame_model(clf.model):
            raise CheckpointError(
                source, "is a frame model: its frames are the timeline; detect without a window (no --window)"
            )
        return cls(clf, window, hop, batch_size)

    def frame_probs(self, src) -> tuple[np.ndarray, float]:
        """(the window scores ``[N, C]`` of an input, one row per window, its duration in s: where its last
        scored window ends)."""
        (r,) = self.classifier.score([src], window=self.window, hop=self.hop, batch_size=self.batch_size)
        if r.error:
            raise AudioError(None, r.error)  # already one line naming the input
        if not r.windows:
            raise AudioError(r.name, "holds no audio samples")
        return np.stack([sc for _, _, sc in r.windows]).astype(np.float32), float(r.windows[-1][1])

    def _events(self, probs, duration, thresholds, min_duration, merge_gap) -> list:
        """The timeline's events with the edges extended to the file (module docstring)."""
        first, last = self.offset, self.offset + len(probs) * self.hop
        out = []
        for a, b, label in super()._events(probs, duration, thresholds, min_duration, merge_gap):
            a = 0.0 if a <= first + _TOL else a
            b = duration if b >= last - _TOL else min(b, duration)
            if b > a:
                out.append((a, b, label))
        return out


def _num_classes(clf: Classifier) -> int:
    return max(len(clf.labels), int(getattr(clf.model, "num_classes", 0) or 0))


def load_detector(
    source: str | os.PathLike,
    window: float | None = None,
    hop: float | None = None,
    labels: Sequence[str] | None = None,
    template: str = DEFAULT_TEMPLATE,
    device: str = "auto",
    batch_size: int = 8,
    **frame_options,
) -> Timeline:
    """The detector of ``source``: with ``window``, a :class:`WindowDetector` (a clip model, ``labels``
    zero-shot); without, a frame model's :class:`Detector` (``frame_options``: its ``block``, ``overlap``,
    ``stitch``). Zero-shot labels without a window are one ValueError (a zero-shot classifier scores
    clips)."""
    if window is None:
        if labels is not None:
            raise ValueError("zero-shot labels make a clip classifier: give a window (--window SECONDS)")
        return Detector.from_pretrained(source, device=device, batch_size=batch_size, **frame_options)
    return WindowDetector.from_pretrained(
        source, window, hop, labels=labels, template=template, device=device, batch_size=batch_size
    )
