"""One run folder, one writer: an advisory lock that a second process meets with a clear message.

:class:`RunLock` takes an exclusive ``flock`` on ``<run folder>/.selfalign.lock`` (created once and left in
place: removing a lock file while another process waits on it would let two writers in). The lock is the
operating system's, so it is released however the holder ends (exit, Ctrl-C, a kill); the file records the
holder's process id for the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from selfalign.errors import SelfAlignError

LOCK_FILE = ".selfalign.lock"


class RunFolderInUse(SelfAlignError):
    """Another process is writing the same run folder."""


class RunLock:
    """An exclusive lock on a run folder (a context manager); raises :class:`RunFolderInUse` when taken."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock now, or raise :class:`RunFolderInUse` naming the process that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise RunFolderInUse(
                f"run folder {self.folder} is in use by another selfalign process (pid {holder}); wait for it to "
                "finish (the same command then resumes) or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the lock go (the file stays)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
