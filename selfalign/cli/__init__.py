"""The ``selfalign`` command line: thin click commands over the library.

Sub-commands live in their own modules and are imported only when used, so that ``selfalign --help`` and
``selfalign surveys ...`` start fast (LiteLLM and DSPy take seconds to import).
"""

from __future__ import annotations

import importlib
import sqlite3
import sys

import click

from selfalign.errors import SelfAlignError

# command name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "surveys": "selfalign.cli.surveys_cmd:surveys",
    "models": "selfalign.cli.models_cmd:models",
    "cache": "selfalign.cli.models_cmd:cache",
    "programs": "selfalign.cli.programs_cmd:programs",
    "ask": "selfalign.cli.programs_cmd:ask",
    "compare": "selfalign.cli.eval_cmd:compare",
    "eval": "selfalign.cli.eval_cmd:eval_spec",
    "report": "selfalign.cli.eval_cmd:report",
    "optimize": "selfalign.cli.optimize_cmd:optimize",
    "translate": "selfalign.cli.translate_cmd:translate",
}

SHORT_HELP: dict[str, str] = {
    "surveys": "List, show and import surveys.",
    "models": "List the embedded model and configured models.",
    "cache": "Inspect or clear the model-result cache.",
    "programs": "List the named alignment programs.",
    "ask": "Ask one question as one country, with the program's demonstrations.",
    "compare": "Compare programs side by side on a question split.",
    "eval": "Run an experiment spec (TOML) into a run table.",
    "report": "Render Markdown and HTML reports from a run folder.",
    "optimize": "Learn how demonstrations are selected for a country.",
    "translate": "Translate a survey into another language with a model.",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except SelfAlignError as exc:
            _fail(ctx, str(exc))
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "selfalign"
            _fail(ctx, f"{exc.format_message()} (see `{where} -h`)")
        except OSError as exc:  # a read-only or full disk, a folder that is a file, ...
            target = f"{exc.filename}: " if exc.filename else ""
            _fail(ctx, f"{target}{exc.strerror or exc}")
        except sqlite3.Error as exc:  # the model cache's database (e.g. a read-only cache folder)
            _fail(ctx, f"the model-result cache cannot be used: {exc} (see --cache-dir / SELFALIGN_CACHE_DIR)")


def _fail(ctx: click.Context, message: str) -> None:
    """Print ``message`` as one ``error:`` line (secrets redacted) and exit 2."""
    from selfalign.models.redact import redact

    text = " ".join(redact(message).split())
    click.echo(f"error: {text}", err=True)
    ctx.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="selfalign")
def cli() -> None:
    """selfalign: measure and improve how closely LLM answers to value surveys match real countries."""


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="selfalign", standalone_mode=True)
    except SelfAlignError as exc:  # raised outside a command's invoke
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
