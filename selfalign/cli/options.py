"""Options shared by every command that takes ``--model``: where the model is served, how long to wait, how often
to retry (the same keys as a models.toml alias; a command-line value wins)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def model_options(command: Callable[..., Any] | None = None, *, retry_invalid: bool = True) -> Callable[..., Any]:
    """Add ``--api-base``, ``--timeout`` and ``--retries`` (passed on as ``api_base``, ``timeout``, ``retries``)
    and, for commands that score probes (``retry_invalid``, the default), ``--retry-invalid`` (passed on as
    ``retry_invalid``). Use as ``@model_options`` or ``@model_options(retry_invalid=False)``."""

    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        if retry_invalid:
            command = click.option(
                "--retry-invalid",
                is_flag=True,
                default=False,
                help="Ask again the probes whose cached answer was off-format (the new answer replaces it).",
            )(command)
        command = click.option(
            "--retries",
            type=click.IntRange(0, 20),
            default=None,
            help="Retries of a failed model call (rate limits, timeouts, 5xx) [3; the embedded model: 0].",
        )(command)
        command = click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Seconds to wait for one model call [60].",
        )(command)
        return click.option("--api-base", default=None, help="Base URL of an OpenAI-compatible server for --model.")(
            command
        )

    return add(command) if command is not None else add


def client_settings(
    api_base: str | None, timeout: float | None, retries: int | None, retry_invalid: bool = False
) -> dict[str, Any]:
    """The ModelClient settings the options name (only those given; ``retry_invalid`` only when set)."""
    settings = {
        "api_base": api_base,
        "timeout_s": timeout,
        "max_retries": retries,
        "retry_invalid": retry_invalid or None,
    }
    return {k: v for k, v in settings.items() if v is not None}


def open_cache_or_fail(cache_dir: str | Path | None) -> None:
    """Open the model-result cache now, so that a cache folder that cannot be used stops a command before it
    prints or runs anything (one line naming the folder)."""
    from selfalign.errors import SelfAlignError
    from selfalign.models.cache import default_cache_dir, open_cache

    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if folder.exists() and not folder.is_dir():
        raise SelfAlignError(
            f"the model-result cache folder {folder} is a file, not a folder (set --cache-dir or SELFALIGN_CACHE_DIR)"
        )
    open_cache(folder)
