"""One disk cache (diskcache) for every model result: answer distributions and generations.

Keys are SHA-256 hashes of a canonical JSON of what determines a result: the model (strings and bases, never
keys), the complete prompt (transcript and continuations, or chat messages, labels and options), the
decoding parameters and the scoring method. Only the hash is stored; values are plain JSON-ready dicts
(never pickled objects, never request headers). Failed calls are not stored, so a re-run retries them;
invalid (off-format) answers are stored with their raw answer.

The directory is ``--cache-dir``, else ``$SELFALIGN_CACHE_DIR``, else ``~/.cache/selfalign``. Hits and misses
of the current process are written to ``last_run.json`` next to the cache when a batch finishes and at exit,
for ``selfalign cache info``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_ENV = "SELFALIGN_CACHE_DIR"
KEY_VERSION = 1
_STATS_FILE = "last_run.json"
_RESULTS = "results"


def default_cache_dir() -> Path:
    """``$SELFALIGN_CACHE_DIR`` or ``~/.cache/selfalign``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path("~/.cache/selfalign").expanduser()


def cache_key(material: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``material`` (sorted keys, no whitespace)."""
    data = json.dumps({"v": KEY_VERSION, **material}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheInfo:
    """What ``selfalign cache info`` shows."""

    path: Path
    size_bytes: int
    entries: int
    last_run_hits: int
    last_run_misses: int
    last_run_at: str | None

    @property
    def hit_rate(self) -> float | None:
        """Hits over lookups in the last run, or None when it made none."""
        total = self.last_run_hits + self.last_run_misses
        return self.last_run_hits / total if total else None


class ResultCache:
    """The model-result cache in one directory; safe to share between threads and processes."""

    def __init__(self, directory: str | Path) -> None:
        import diskcache

        self.path = Path(directory).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        # JSONDisk, uncompressed: values are readable JSON, never pickles (and a stray secret would be visible)
        self._cache = diskcache.Cache(
            str(self.path / _RESULTS),
            disk=diskcache.JSONDisk,
            disk_compress_level=0,
            size_limit=2**40,
            eviction_policy="none",
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._saved = (0, 0)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored value for ``key`` or None; counts a hit or a miss."""
        value = self._cache.get(key)
        with self._lock:
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
        return value

    def set(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON-ready value."""
        self._cache.set(key, value)

    def set_many(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Store several (key, value) pairs in one transaction (about half the cost of separate writes)."""
        if len(items) == 1:
            self._cache.set(*items[0])
            return
        with self._cache.transact():
            for key, value in items:
                self._cache.set(key, value)

    def __contains__(self, key: str) -> bool:
        return key in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    def save_run_stats(self) -> None:
        """Write this process's hits and misses to ``last_run.json`` (nothing when there were no lookups)."""
        with self._lock:
            hits, misses = self.hits, self.misses
            if hits + misses == 0 or (hits, misses) == self._saved:
                return
            self._saved = (hits, misses)
        stats = {"hits": hits, "misses": misses, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()}
        tmp = self.path / f".{_STATS_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(stats), encoding="utf-8")
        tmp.replace(self.path / _STATS_FILE)

    def info(self) -> CacheInfo:
        """Path, size on disk, entries and the last run's hits and misses."""
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        stats: dict[str, Any] = {}
        file = self.path / _STATS_FILE
        if file.exists():
            try:
                stats = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                stats = {}
        return CacheInfo(
            path=self.path,
            size_bytes=size,
            entries=len(self._cache),
            last_run_hits=int(stats.get("hits", 0)),
            last_run_misses=int(stats.get("misses", 0)),
            last_run_at=stats.get("at"),
        )

    def clear(self) -> int:
        """Remove every entry (and the last-run figures); returns how many entries were removed."""
        n = len(self._cache)
        self._cache.clear()
        (self.path / _STATS_FILE).unlink(missing_ok=True)
        with self._lock:
            self.hits = self.misses = 0
            self._saved = (0, 0)
        return n

    def close(self) -> None:
        """Close the underlying database handles."""
        self._cache.close()


_open: dict[Path, ResultCache] = {}
_open_lock = threading.Lock()


def open_cache(cache_dir: str | Path | None = None) -> ResultCache:
    """The result cache in ``cache_dir`` (default: ``$SELFALIGN_CACHE_DIR`` or ``~/.cache/selfalign``).

    One :class:`ResultCache` per directory per process, so that the last-run figures cover the whole run.
    """
    path = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()).resolve()
    with _open_lock:
        cache = _open.get(path)
        if cache is None:
            cache = ResultCache(path)
            _open[path] = cache
    return cache


@atexit.register
def _save_all() -> None:
    for cache in list(_open.values()):
        with contextlib.suppress(OSError):
            cache.save_run_stats()
