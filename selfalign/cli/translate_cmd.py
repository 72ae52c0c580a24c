"""``selfalign translate``: translate a survey into another language with a model."""

from __future__ import annotations

from pathlib import Path

import click

from selfalign import DEFAULT_SURVEY
from selfalign.cli.options import client_settings, model_options

_SHOWN_FAILURES = 8


@click.command()
@click.option("--survey", "survey_name", default=DEFAULT_SURVEY, show_default=True, help="Survey name or folder.")
@click.option("--lang", required=True, help="Code of the language to translate into, e.g. fr, pt-BR.")
@click.option("--model", required=True, help="Model string or alias (e.g. openai/gpt-4o-mini).")
@click.option("--source-lang", default="en", show_default=True, help="Language translated from.")
@click.option("--name", "language_name", default=None, help='Name of the language, e.g. "French".')
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write into this survey folder (a copy of the survey is made there if it does not exist).",
)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Model cache.")
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True, help="Requests in flight.")
@model_options(retry_invalid=False)
def translate(
    survey_name: str,
    lang: str,
    model: str,
    source_lang: str,
    language_name: str | None,
    out: Path | None,
    cache_dir: Path | None,
    concurrency: int,
    api_base: str | None,
    timeout: float | None,
    retries: int | None,
) -> None:
    """Translate a survey's questions, statements, option labels and answer words into LANG with MODEL.

    The result is marked machine-translated and loads as another language of the survey (``--lang LANG``
    everywhere). It is written into the survey folder when that is writable, else into the user's
    translations folder. Progress is saved as it goes; re-running translates only what is missing.
    """
    from selfalign.translate import ANSWER_WORDS, TranslationError, translate_survey

    def progress(done: int, total: int, unit, error: str | None) -> None:
        if error is not None:
            click.echo(f"  {unit.key}: failed: {error}", err=True)
        elif done == total or done % 25 == 0:
            click.echo(f"  {done}/{total} requests done", err=True)

    report = translate_survey(
        survey_name,
        lang,
        model,
        source_lang=source_lang,
        name=language_name,
        out=out,
        cache_dir=cache_dir,
        concurrency=concurrency,
        progress=progress,
        **client_settings(api_base, timeout, retries),
    )
    where = report.destination
    counts = (
        f"{report.units} requests: {report.translated} translated now ({report.calls} model calls, "
        f"{report.cache_hits} from the model cache), {report.reused} from earlier runs"
    )
    if not report.complete:
        ids = [q for q in report.failed if q != ANSWER_WORDS]
        named = ", ".join(f"{q} ({report.failed[q]})" for q in ids[:_SHOWN_FAILURES])
        if len(ids) > _SHOWN_FAILURES:
            named += f" and {len(ids) - _SHOWN_FAILURES} more"
        if ANSWER_WORDS in report.failed:
            named = f"the answer words ({report.failed[ANSWER_WORDS]})" + (f"; {named}" if named else "")
        raise TranslationError(
            f"translation of {report.survey} into {lang} is incomplete: {len(ids)} question(s) failed: {named}; "
            f"{counts}; the rest is saved in {where.partial_file}; run the same command again to retry only those"
        )
    click.echo(f"{report.survey}: {report.name} ({lang}) written to {report.written} ({counts}).")
    shown = str(out) if out is not None else survey_name
    click.echo(
        f"Machine-translated by {', '.join(report.models)}, not reviewed; review it there, then use it with "
        f"--lang {lang} (e.g. selfalign surveys show {shown} --lang {lang})."
    )
