"""Reading survey and import text files, with every way they can be broken turned into a one-line error.

Not UTF-8, binary (NUL bytes), a field over the CSV module's size limit, a row with too few or too many
fields, a file that cannot be opened: each is a :class:`SurveyFormatError` naming the file (and line).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from selfalign.errors import SurveyFormatError

_SNIFF_BYTES = 8192


def _os_problem(exc: OSError) -> str:
    return f"cannot read it ({exc.strerror or exc})"


def _decode_problem(exc: UnicodeDecodeError) -> str:
    byte = exc.object[exc.start : exc.start + 1]
    return f"not UTF-8 text (byte {byte.hex() if byte else '?'} cannot be decoded); save it as UTF-8"


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        return f"a field is longer than {csv.field_size_limit():,} characters, the CSV limit (is it the right file?)"
    if "NUL" in text:
        return "contains NUL bytes: a binary file, not text"
    return f"not valid CSV ({text})"


@contextmanager
def open_text(file: Path) -> Iterator[IO[str]]:
    """Open a UTF-8 text file (byte-order mark allowed); problems reading or decoding it become one-line errors.

    Errors raised while the caller reads inside the ``with`` block are translated too (decoding happens
    as the file is read).
    """
    if not file.exists():
        raise SurveyFormatError(file, "file not found")
    if file.is_dir():
        raise SurveyFormatError(file, "is a folder, not a file")
    try:
        with file.open("rb") as raw:
            head = raw.read(_SNIFF_BYTES)
        if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise SurveyFormatError(file, "contains NUL bytes: a binary file, not text")
        with file.open(encoding="utf-8-sig", newline="") as handle:
            yield handle
    except UnicodeDecodeError as exc:
        raise SurveyFormatError(file, _decode_problem(exc)) from None
    except OSError as exc:
        raise SurveyFormatError(file, _os_problem(exc)) from None


def read_text(file: Path) -> str:
    """The whole text of a UTF-8 file, or a one-line :class:`SurveyFormatError`."""
    with open_text(file) as handle:
        return handle.read()


@contextmanager
def csv_errors(file: Path, reader: Any) -> Iterator[None]:
    """Turn a :class:`csv.Error` raised while ``reader`` (a ``csv.reader``) is read into a one-line error."""
    try:
        yield
    except csv.Error as exc:
        raise SurveyFormatError(file, _csv_problem(exc), reader.line_num) from None


@contextmanager
def csv_rows(file: Path, required: Sequence[str], expected: str) -> Iterator[Iterator[tuple[int, dict[str, str]]]]:
    """Open a CSV file, check its header has the ``required`` columns and yield its (line number, row) pairs.

    The number is the record's position counting the header as 1 and skipping blank lines (the physical
    line for files without blank lines or line breaks inside fields). A row with fewer or more fields
    than the header is an error.
    """
    with open_text(file) as handle:
        raw = csv.reader(handle)
        with csv_errors(file, raw):
            header = next(raw, None)
        if header is None:
            raise SurveyFormatError(file, "file is empty")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise SurveyFormatError(file, f"missing columns {missing}; expected {expected}", 1)

        def rows() -> Iterator[tuple[int, dict[str, str]]]:
            number = 1
            with csv_errors(file, raw):
                for record in raw:
                    if not record:
                        continue
                    number += 1
                    if len(record) != len(header):
                        raise SurveyFormatError(
                            file, f"expected {len(header)} fields as in the header, found {len(record)}", raw.line_num
                        )
                    yield number, dict(zip(header, record, strict=True))

        yield rows()
