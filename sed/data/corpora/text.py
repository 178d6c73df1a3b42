"""Reading the text tables of a corpus (manifests, DCASE CSVs): UTF-8 lines and CSV rows whose
every problem (bytes that are not UTF-8, a field past csv's size limit, a stray quote) is a
:class:`DatasetError` naming the file and the line, read one line at a time."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from sed.errors import DatasetError

__all__ = ["csv_errors", "csv_rows", "text_lines"]


def text_lines(path: str | os.PathLike) -> Iterator[str]:
    """The lines of a UTF-8 text file (a leading BOM dropped), line endings kept for :mod:`csv`."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DatasetError(
                        p,
                        f"line {lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
                    ) from None
                yield line.removeprefix("\ufeff") if lineno == 1 else line
    except OSError as e:
        raise DatasetError(p, f"cannot read ({e.strerror or e})") from None


def csv_errors(reader, path: str | os.PathLike) -> Iterator:
    """The rows of a ``csv.reader``/``DictReader`` (of :func:`text_lines`), with ``csv.Error`` as
    a :class:`DatasetError` naming ``path`` and the line."""
    it = iter(reader)
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except csv.Error as e:
            raise DatasetError(path, f"line {reader.line_num}: {e}") from None


def csv_rows(path: str | os.PathLike, delimiter: str = ",") -> Iterable[tuple[int, list[str]]]:
    """(line number, cells) of each CSV row."""
    reader = csv.reader(text_lines(path), delimiter=delimiter)
    for row in csv_errors(reader, path):
        yield reader.line_num, row
