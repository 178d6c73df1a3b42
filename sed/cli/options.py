"""What every ``sedkit`` parser shares: numeric option types with a stated range, the help formatter
(what each option takes, its range and its default) and the parser class (a usage error is one line).

Every numeric option is declared with :func:`bounded` (or one of the common kinds below), so an
absurd value (NaN, infinity, negative, zero, a size that would allocate the machine away) is one
``error:`` line and exit 2 before any work, and ``--help`` states the range.
"""

from __future__ import annotations

import argparse
import math
import sys

from sed.errors import printable

__all__ = [
    "BATCH_SIZE",
    "DEVICE",
    "PRECISIONS",
    "RATE",
    "SEED",
    "TOP_K",
    "Bounded",
    "HelpFormatter",
    "Parser",
    "add_batch_size",
    "add_checkpoint",
    "add_device",
    "add_labels",
    "add_precision",
    "bounded",
    "count",
    "seconds",
    "zero_shot",
]


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class Bounded:
    """An argparse ``type``: a finite ``kind`` (``int`` or ``float``) with ``low <= value <= high``
    (``low < value`` when ``open_low``); ``metavar`` names it in the help (``SECONDS``, ``N``, ``HZ``)."""

    def __init__(self, kind: type, low: float, high: float, metavar: str = "N", open_low: bool = False):
        if kind not in (int, float) or not low <= high:
            raise ValueError(f"bounded({kind.__name__}, {low}, {high}): not a range of int or float")
        self.kind, self.low, self.high, self.metavar, self.open_low = kind, low, high, metavar, open_low

    @property
    def range(self) -> str:
        """The range as the help and the errors state it: ``0 < SECONDS <= 3600``, ``1 <= N <= 1024``."""
        return f"{_number(self.low)} {'<' if self.open_low else '<='} {self.metavar} <= {_number(self.high)}"

    def __call__(self, text: str):
        shown = printable(text if len(text) <= 24 else text[:21] + "...")
        try:
            value = self.kind(text)
        except (ValueError, OverflowError):  # also int() of a 5000-digit string
            raise argparse.ArgumentTypeError(
                f"{shown} is not {'an integer' if self.kind is int else 'a number'} ({self.range})"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{shown} is not finite ({self.range})")
        if value < self.low or value == self.low and self.open_low or value > self.high:
            raise argparse.ArgumentTypeError(f"{shown} is out of range ({self.range})")
        return value

    def __repr__(self) -> str:
        return f"bounded({self.kind.__name__}, {self.range})"


def bounded(kind: type, low: float, high: float, metavar: str = "N", open_low: bool = False) -> Bounded:
    """The argparse ``type`` of a number of ``kind`` in ``[low, high]`` (``(low, high]`` with
    ``open_low``)."""
    return Bounded(kind, low, high, metavar, open_low)


def count(high: int, low: int = 1, metavar: str = "N") -> Bounded:
    """A whole number of things: ``low <= N <= high``."""
    return Bounded(int, low, high, metavar)


def seconds(high: float) -> Bounded:
    """A duration: ``0 < SECONDS <= high``."""
    return Bounded(float, 0.0, float(high), "SECONDS", open_low=True)


#: the kinds several verbs share
BATCH_SIZE = count(1024)
TOP_K = count(10_000)
SEED = count(2**32 - 1, low=0, metavar="SEED")  # what numpy and torch seed generators take
RATE = Bounded(int, 1000, 768_000, "HZ")  # audio sample rates (and what soxr resamples between in one step)


#: the one default of --device (every verb that runs a model takes it)
DEVICE = "auto"
#: what --precision takes (``sedkit export`` writes fp32 or int8 graphs only)
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def add_checkpoint(
    p: argparse.ArgumentParser, help: str, several: bool = False, required: bool = True
) -> None:
    """``--checkpoint`` (``several``: repeatable, a list) with what this verb reads in ``help``."""
    p.add_argument(
        "--checkpoint", required=required, default=None, action="append" if several else "store", help=help
    )


def add_labels(p: argparse.ArgumentParser) -> None:
    """``--labels`` / ``--labels-file`` (zero-shot classes named by text, of a CLAP checkpoint) and
    ``--template``; :func:`zero_shot` reads them."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--labels", nargs="+", metavar="LABEL", default=None, help="zero-shot classes named by text (CLAP)"
    )
    g.add_argument("--labels-file", metavar="FILE", default=None, help="zero-shot classes, one per line")
    p.add_argument(
        "--template",
        default=None,
        help="the prompt of each zero-shot label, {} standing for the label "
        "(default: 'This is a sound of {}.', the transformers pipeline's)",
    )


def zero_shot(args: argparse.Namespace) -> dict:
    """``{"labels", "template"}`` of :func:`add_labels`' options (``{}`` without labels); a labels file
    that cannot be read, or a template without labels, is one UsageError line."""
    from sed.errors import SedError, UsageError
    from sed.models.zeroshot import DEFAULT_TEMPLATE, read_labels

    labels = args.labels
    if args.labels_file is not None:
        try:
            labels = read_labels(args.labels_file)
        except SedError as e:
            raise UsageError(e) from None
    if labels is None:
        if args.template is not None:
            raise UsageError("--template needs --labels or --labels-file")
        return {}
    return {"labels": list(labels), "template": args.template or DEFAULT_TEMPLATE}


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device`` with the one default, :data:`DEVICE`."""
    p.add_argument("--device", default=DEVICE, help="auto, cpu, cuda or cuda:N")


def add_precision(
    p: argparse.ArgumentParser,
    choices: tuple[str, ...] = PRECISIONS,
    help: str = "int8: dynamic int8 linear layers on the CPU (an .onnx file keeps its own precision)",
) -> None:
    """``--precision`` (default fp32) of :data:`PRECISIONS` or the verb's subset."""
    p.add_argument("--precision", choices=list(choices), default="fp32", help=help)


def add_batch_size(p: argparse.ArgumentParser, what: str = "clips") -> None:
    """``--batch-size`` (1 to 1024, default 8): ``what`` goes through the model at once."""
    p.add_argument("--batch-size", type=BATCH_SIZE, default=8, help=f"{what} per forward pass")


class HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its range and its default; a number option's metavar says what it is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        extra = []
        if isinstance(action.type, Bounded):
            extra.append(action.type.range)
        default = action.default
        shown = default is not None and default is not False and default != argparse.SUPPRESS
        flag = action.nargs == 0 and not isinstance(
            action, argparse.BooleanOptionalAction
        )  # its value is no default
        if shown and action.option_strings and not flag and "%(default)" not in text:
            listed = " ".join(map(str, default)).replace("%", "%%") if isinstance(default, list) else None
            extra.append(f"default: {listed or '%(default)s'}")
        if not extra:
            return text
        if text.endswith(")"):  # one parenthesis: (default: the model's; 1000 <= HZ <= 768000)
            return f"{text[:-1]}; {'; '.join(extra)})"
        return f"{text} ({'; '.join(extra)})".lstrip()

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        return (
            action.type.metavar
            if isinstance(action.type, Bounded)
            else super()._get_default_metavar_for_optional(action)
        )


class Parser(argparse.ArgumentParser):
    """The parser of ``sedkit`` and of each verb (the sub-parsers inherit the class): :class:`HelpFormatter`,
    and a usage error is one escaped ``error:`` line (exit 2) that points to ``--help``."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str):
        print(
            f"error: {printable(self.prog)}: {printable(message)} (see {printable(self.prog)} --help)",
            file=sys.stderr,
        )
        sys.exit(2)
