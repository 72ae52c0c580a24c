"""The progress bar of a search: planned calls, stage by stage (or nothing)."""

from __future__ import annotations

from typing import Any


class Progress:
    """A rich progress bar of planned calls (or nothing)."""

    def __init__(self, enabled: bool, console: Any, total: int) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("calls"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task("search", total=total)

    def __enter__(self) -> Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def stage(self, text: str, total: int | None = None) -> None:
        if self._progress is not None:
            kwargs: dict[str, Any] = {"description": text}
            if total is not None:
                kwargs |= {"total": total, "completed": 0}
            self._progress.update(self._task, **kwargs)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)
