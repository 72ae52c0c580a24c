"""The CLI's console: rich output on a terminal; nothing cut or wrapped when written to a pipe or a log."""

from __future__ import annotations

from rich.console import Console

PIPE_WIDTH = 100_000  # not a terminal: tables and lines keep their full width (no cropped columns, no wrapping)


def make_console(*, stderr: bool = False) -> Console:
    """A console for command output; when it is not a terminal, wide enough that no table column is cropped."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH)
