"""``selfalign models`` and ``selfalign cache``: the models selfalign can call, and the model-result cache."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from selfalign.cli.console import make_console
from selfalign.models.cache import default_cache_dir, open_cache
from selfalign.models.config import config_path, list_models

CACHE_DIR_OPTION = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cache directory (default: $SELFALIGN_CACHE_DIR or ~/.cache/selfalign).",
)


@click.command()
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Models config file (default: $SELFALIGN_CONFIG or ~/.config/selfalign/models.toml).",
)
def models(config: Path | None) -> None:
    """List the embedded default model and the configured models, and whether each gives log-probabilities.

    Models not listed can still be used by their LiteLLM string (openai/gpt-4o-mini, ollama/llama3.1,
    openai/<name> with --api-base, ...); keys come from the provider's environment variables.
    """
    rows = list_models(config)
    table = Table(title="Models")
    for column in ("name", "model", "provider", "api_base", "logprobs", "source"):
        table.add_column(column, no_wrap=column in ("name", "model"))
    for info in rows:
        name = info.name + (" (default)" if info.is_default else "")
        base = info.api_base or ("in-process" if info.source == "embedded" else "-")
        if info.deployments > 1:
            base = f"{info.deployments} deployments (Router)"
        table.add_row(
            name,
            info.model,
            info.provider,
            base,
            "yes" if info.supports_logprobs else "no (sampled)",
            info.source,
        )
    console = make_console()
    console.print(table)
    file = config_path(config)
    note = f"config: {file}" + ("" if file.exists() else " (none)")
    console.print(note, style="dim", highlight=False)


@click.group()
def cache() -> None:
    """Inspect or clear the model-result cache."""


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


@cache.command("info")
@CACHE_DIR_OPTION
def cache_info(cache_dir: Path | None) -> None:
    """Show the cache's path, size on disk, entries and the hit rate of the last run."""
    info = open_cache(cache_dir).info()
    rate = info.hit_rate
    last = (
        f"{rate:.1%} ({info.last_run_hits} hits, {info.last_run_misses} misses, {info.last_run_at})"
        if rate is not None
        else "no run recorded"
    )
    click.echo(f"path:      {info.path}")
    click.echo(f"size:      {_human(info.size_bytes)}")
    click.echo(f"entries:   {info.entries}")
    click.echo(f"last run:  {last}")


@cache.command("clear")
@CACHE_DIR_OPTION
def cache_clear(cache_dir: Path | None) -> None:
    """Remove every cached model result."""
    store = open_cache(cache_dir)
    removed = store.clear()
    click.echo(f"removed {removed} entries from {store.path}")


__all__ = ["cache", "default_cache_dir", "models"]
