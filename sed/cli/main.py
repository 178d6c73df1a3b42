"""The ``sedkit`` command (also ``python -m sed``): the parser, the exit codes and the error reports.

Every verb lives in the module of its group (:mod:`~sed.cli.audio`, :mod:`~sed.cli.catalogue`,
:mod:`~sed.cli.classify`, :mod:`~sed.cli.deploy`, :mod:`~sed.cli.detect`, :mod:`~sed.cli.sed_eval`,
:mod:`~sed.cli.search`, :mod:`~sed.cli.seld`, :mod:`~sed.cli.serve`, :mod:`~sed.cli.shard`,
:mod:`~sed.cli.stream`, :mod:`~sed.cli.train`) as a thin call of a Python API. A verb gets its parsed
arguments and a :class:`Console` and returns how many of its inputs failed; it raises
:class:`~sed.errors.UsageError` when the job cannot start. Exit codes: 0 when everything succeeded, 1 when any
input failed (each failure is one line on stderr and the rest of the batch goes on), 2 for usage errors. User
errors never print a traceback; names are escaped so every report is one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sed.cli import (
    audio,
    catalogue,
    classify,
    deploy,
    detect,
    fewshot,
    search,
    sed_eval,
    seld,
    serve,
    shard,
    stream,
    train,
)
from sed.cli.options import Parser
from sed.errors import SedError, UsageError, printable
from sed.version import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
VERB_GROUPS = (
    audio,
    catalogue,
    classify,
    deploy,
    detect,
    fewshot,
    search,
    sed_eval,
    seld,
    serve,
    shard,
    stream,
    train,
)


class Console:
    """What a verb gets besides its arguments: one-line reports on stderr, progress bars, batches."""

    def error(self, err: Exception | str) -> None:
        """One ``error:`` line on stderr per problem of a user error (a list of bad files is one per
        line); no traceback. Names are escaped, so a hostile one cannot split or forge a line."""
        for line in str(err).splitlines() or [""]:
            print(f"error: {printable(line)}", file=sys.stderr)

    def note(self, message: str) -> None:
        print(f"note: {printable(message)}", file=sys.stderr)

    def status(self, message: str) -> None:
        """A line about what was done (``wrote 3 files to out/``), on stderr so stdout stays data."""
        print(printable(message), file=sys.stderr)

    def progress(
        self,
        iterable,
        total: int | None = None,
        desc: str = "",
        done: Callable | None = None,
        unit: str = "file",
    ):
        """A progress bar of ``total`` files (or ``unit``s; default: the iterable's length) on stderr,
        silent when stderr is not a terminal. With ``done``, the items are not the files (e.g. a file's
        windows): ``done(item)`` is the number of files finished when ``item`` arrives, and the bar ends at
        ``total``."""
        from tqdm import tqdm

        bar = tqdm(
            None if done else iterable,
            total=total,
            desc=desc,
            unit=unit,
            file=sys.stderr,
            disable=None,
            leave=False,
        )
        return _counted(iterable, bar, done) if done else bar

    def batch(self, items: Sequence, work: Callable, desc: str) -> int:
        """Apply ``work`` to every item; user errors are reported and the batch goes on. Returns the
        failures."""
        failed = 0
        for item in self.progress(items, total=len(items), desc=desc):
            try:
                work(item)
            except SedError as e:
                self.error(e)
                failed += 1
        return failed

    def expand(self, inputs: Sequence[str]) -> tuple[list[Path], int]:
        """The audio files of files, folders and globs; a bad input is reported and counted."""
        from sed.audio.io import find_audio_files

        files, failed = [], 0
        for item in inputs:
            try:
                files.extend(find_audio_files([item]))
            except SedError as e:
                self.error(e)
                failed += 1
        return files, failed


def _counted(items, bar, done: Callable):
    """``items`` as they come, moving ``bar`` to ``done(item)`` files and, at the end, to its total."""
    with bar:
        for item in items:
            bar.update(max(0, done(item) - bar.n))
            yield item
        if bar.total:
            bar.update(max(0, bar.total - bar.n))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sedkit",
        description="Audio sound-event classification and SELD.",
        epilog="sedkit VERB --help: what a verb takes, each option's range and default.",
    )
    parser.add_argument("--version", action="version", version=f"sedkit {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for group in VERB_GROUPS:
        group.add_verbs(sub)
    return parser


def _exit_code(failures: int) -> int:
    return EXIT_FAILED if failures else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console()
    raw = {verb: run for group in VERB_GROUPS for verb, run in getattr(group, "RAW_VERBS", {}).items()}
    try:
        if argv and argv[0] in raw:  # verbs with their own parser (LightningCLI)
            return _exit_code(raw[argv[0]](argv, console))
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        if rest and not getattr(
            args, "config_overrides", False
        ):  # only verbs reading a data config take them
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.overrides = rest
        args.argv = argv  # the command as given (what a verb records, e.g. in a shard index)
        return _exit_code(args.run(args, console))
    except UsageError as e:
        console.error(e)
        return EXIT_USAGE
    except SedError as e:
        console.error(e)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (``sedkit models | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
