"""Reading the header-checked CSV files of the import loaders (tidy, GlobalOpinionQA)."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from selfalign.errors import SurveyFormatError


@contextmanager
def csv_rows(file: Path, required: Sequence[str], expected: str) -> Iterator[Iterator[tuple[int, dict[str, str]]]]:
    """Open a CSV file, check its header has the ``required`` columns and yield its (line number, row) pairs."""
    with file.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise SurveyFormatError(file, "file is empty")
        missing = [c for c in required if c not in reader.fieldnames]
        if missing:
            raise SurveyFormatError(file, f"missing columns {missing}; expected {expected}", 1)
        yield enumerate(reader, start=2)
