"""The append-only JSONL log of a run folder (``runs.jsonl``): one line per finished row."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from threading import Lock
from typing import Any

from selfalign.plan import row_key

LOG_FILE = "runs.jsonl"
FSYNC_INTERVAL_S = 1.0


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class RunLog:
    """The append-only JSONL log of a run folder: one line per finished row, safe to call from threads."""

    def __init__(self, path: Path, fsync_interval_s: float = FSYNC_INTERVAL_S) -> None:
        self.path = path
        self.fsync_interval_s = fsync_interval_s
        self._lock = Lock()
        self._synced_at = time.monotonic()
        self.written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
        self._file = path.open("a", encoding="utf-8")
        if needs_newline:  # a line cut short by a kill: end it so the next row starts cleanly
            self._file.write("\n")
            self._file.flush()

    def append(self, row: dict[str, Any]) -> None:
        """Append one row and flush it; fsync when ``fsync_interval_s`` has passed since the last fsync."""
        line = json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=False, allow_nan=False)
        with self._lock:
            if self._file.closed:  # a result arriving after an interrupt: it is in the model cache, not the log
                return
            self._file.write(line + "\n")
            self._file.flush()
            self.written += 1
            now = time.monotonic()
            if now - self._synced_at >= self.fsync_interval_s:
                os.fsync(self._file.fileno())
                self._synced_at = now

    def close(self) -> None:
        """Flush, fsync and close."""
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def read_log(path: Path) -> dict[str, dict[str, Any]]:
    """The logged rows by row key; the last line of a key wins. Lines that do not parse (a row cut short by a
    kill) are skipped."""
    rows: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return rows
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
                key = row_key(row)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            rows[key] = row
    return rows
