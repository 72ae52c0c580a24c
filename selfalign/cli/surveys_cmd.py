"""``selfalign surveys``: list, show and import surveys."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from selfalign.cli.console import make_console
from selfalign.countries import SAMPLE_VARIANTS
from selfalign.errors import SelfAlignError
from selfalign.loaders import available_surveys, check_name, load_survey, write_bundled
from selfalign.loaders.publish import check_target
from selfalign.loaders.report import ImportReport
from selfalign.paths import user_data_dir, user_surveys_dir
from selfalign.survey import Survey

IMPORT_FORMATS = ("wvs-microdata", "global-opinions", "tidy")


@click.group()
def surveys() -> None:
    """List, show and import surveys (bundled, imported, or a folder path)."""


def _home_is_usable() -> None:
    home = user_data_dir()
    if home.exists() and not home.is_dir():
        raise SelfAlignError(f"the selfalign data folder {home} is a file, not a folder (check SELFALIGN_HOME)")


@surveys.command("list")
def list_surveys() -> None:
    """List the surveys selfalign can load by name."""
    home = user_data_dir()
    if home.exists() and not home.is_dir():
        click.echo(
            f"note: {home} is a file, not a folder (SELFALIGN_HOME?): listing the bundled surveys only", err=True
        )
    table = Table(title="Surveys")
    for column in ("name", "questions", "countries", "topics", "languages", "binary-capable", "path"):
        table.add_column(column)
    for name, path in available_surveys().items():
        try:
            survey = load_survey(path)
        except (SelfAlignError, OSError) as exc:
            table.add_row(name, "-", "-", "-", "-", "-", escape(f"{path} (broken: {exc})"))
            continue
        binary = sum(1 for q in survey.questions if q.supports("binary"))
        table.add_row(
            name,
            str(len(survey.questions)),
            str(len(survey.countries)),
            str(len(survey.topics)),
            ",".join(survey.languages),
            str(binary),
            escape(str(path)),
        )
    make_console().print(table)


def _show_overview(survey: Survey, console: Console) -> None:
    console.print(f"[bold]{escape(survey.name)}[/bold]: {escape(str(survey.metadata.get('title', '')))}")
    console.print(
        f"{len(survey.questions)} questions, {len(survey.countries)} countries, "
        f"languages: {', '.join(survey.languages)}"
    )
    table = Table(title="Topics")
    table.add_column("topic")
    table.add_column("questions", justify="right")
    table.add_column("binary-capable", justify="right")
    for topic in survey.topics:
        qs = [q for q in survey.questions if q.topic == topic]
        table.add_row(escape(topic), str(len(qs)), str(sum(q.supports("binary") for q in qs)))
    console.print(table)
    console.print(
        "Countries: " + ", ".join(escape(f"{c} ({survey.country_names[c]})") for c in survey.countries), highlight=False
    )


def _show_question(survey: Survey, qid: str, countries: list[str], lang: str, console: Console) -> None:
    q = survey.question(qid)
    battery = f", battery {q.battery}" if q.battery else ""
    console.print(f"[bold]{escape(q.id)}[/bold] " + escape(f"[{q.topic}] ({q.scale.value}{battery})"))
    console.print(escape(q.text(lang)))
    if q.binary:
        agree, disagree = survey.side_labels(lang)
        console.print(
            f'Binary statement: "{escape(q.binary.statement(lang))}"  {agree}: {", ".join(q.binary.agree_codes)}'
            f"  {disagree}: {', '.join(q.binary.disagree_codes)}"
        )
    elif q.binary_skip_reason:
        console.print(escape(f"Binary protocol: skipped ({q.binary_skip_reason})"))
    if q.note:
        console.print(escape(f"Note: {q.note}"))
    shown = [c for c in countries if survey.has_answers(c, q.id)]
    codes = q.option_codes
    if not countries:
        shown = [c for c in survey.countries if survey.has_answers(c, q.id)]
    if len(codes) > 30:
        used = {c for country in shown for c in survey.answers[(country, q.id)].shares}
        codes = tuple(c for c in codes if c in used)
    table = Table()
    table.add_column("code")
    table.add_column("option")
    for country in shown:
        table.add_column(escape(country), justify="right")
    for code in codes:
        option = next(o for o in q.options if o.code == code)
        cells = []
        for country in shown:
            answers = survey.answers[(country, q.id)]
            share = answers.shares.get(code)
            text = "" if share is None else f"{100 * share:.1f}%"
            if code == answers.majority_option:
                text = f"[bold]{text}[/bold]"
            cells.append(text)
        table.add_row(escape(code), escape(option.label(lang)), *cells)
    console.print(table)
    for country in shown:
        a = survey.answers[(country, q.id)]
        side = survey.majority_side(country, q.id)
        n = f"n={a.n_respondents}" if a.n_respondents else "n unknown"
        console.print(
            escape(
                f"{country} ({survey.country_names[country]}): majority option {a.majority_option}"
                + (f", majority side: {side}" if side else "")
                + f"; {n}, {'weighted' if a.weighted else 'unweighted'}, source {a.source}"
            )
        )


@surveys.command("show")
@click.argument("survey_name", metavar="SURVEY")
@click.option(
    "--country", "countries", multiple=True, help="ISO3 code or English name (repeatable, or comma-separated)."
)
@click.option("--question", "question_id", help="Question id, e.g. Q57.")
@click.option("--topic", help="Show the questions of one topic.")
@click.option("--lang", default="en", show_default=True, help="Language of wordings and labels.")
def show(survey_name: str, countries: tuple[str, ...], question_id: str | None, topic: str | None, lang: str) -> None:
    """Show a survey, a topic's questions, or a question's options and countries' shares."""
    survey = load_survey(survey_name)
    lang = survey.resolve_language(lang)
    wanted = [survey.resolve_country(c) for text in countries for c in text.split(",") if c.strip()]
    console = make_console()
    if question_id:
        _show_question(survey, question_id, wanted, lang, console)
        return
    if topic:
        resolved = survey.resolve_topic(topic)
        table = Table(title=escape(resolved))
        table.add_column("id")
        table.add_column("question")
        table.add_column("options", justify="right")
        table.add_column("binary")
        for q in survey.questions_of_topic(resolved):
            table.add_row(
                escape(q.id), escape(q.text(lang)), str(len(q.options)), "yes" if q.supports("binary") else "no"
            )
        console.print(table)
        if wanted:
            for country in wanted:
                console.print(
                    escape(
                        f"{country}: majority options "
                        + ", ".join(
                            f"{q.id}={survey.majority_option(country, q.id)}"
                            for q in survey.questions_of_topic(resolved)
                            if survey.has_answers(country, q.id)
                        )
                    )
                )
        return
    if wanted:
        for country in wanted:
            answered = [q for q in survey.questions if survey.has_answers(country, q.id)]
            console.print(escape(f"{country} ({survey.country_names[country]}): answers to {len(answered)} questions"))
        return
    _show_overview(survey, console)


@surveys.command("import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(IMPORT_FORMATS))
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Name of the new survey.")
@click.option(
    "--questions",
    "questions_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="tidy: the questions CSV (question_id,question,options[,topic,scale,statement,agree,disagree]).",
)
@click.option(
    "--base",
    default="wvs7",
    show_default=True,
    help="wvs-microdata: survey whose questions (wording, options, topics) the Q... columns refer to.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the survey into (default: the user survey folder, loadable by name).",
)
@click.option("--force", is_flag=True, help="Replace an existing survey of that name (only a survey folder).")
@click.option(
    "--sample-variants",
    type=click.Choice(SAMPLE_VARIANTS),
    default="separate",
    show_default=True,
    help="Countries reported as several samples ('India (Old national sample)'): keep each as its own code "
    "(IND.old_national), merge into the country's code (skipped where two compete), or drop them.",
)
@click.option("--strict", is_flag=True, help="Refuse the file at the first unusable pair or unmapped country name.")
@click.option("-v", "--verbose", is_flag=True, help="List every skipped pair and the names merged into one code.")
def import_survey(
    fmt: str,
    files: tuple[Path, ...],
    name: str,
    questions_file: Path | None,
    base: str,
    out_dir: Path | None,
    force: bool,
    sample_variants: str,
    strict: bool,
    verbose: bool,
) -> None:
    """Import FILE... in FORMAT as a survey folder in the bundled format (written atomically).

    Country names are mapped to ISO3 codes with country_converter; (country, question) pairs that cannot
    be used are skipped and summed up in one line (--verbose lists them; --strict refuses the file).
    """
    check_name(name)
    if out_dir is None:
        _home_is_usable()
    target = (out_dir or user_surveys_dir()) / name
    check_target(target, overwrite=force)  # before reading: refuse early, delete nothing
    report = ImportReport(strict=strict)
    if fmt == "wvs-microdata":
        from selfalign.loaders.wvs_microdata import read_wvs_microdata

        survey = read_wvs_microdata(list(files), load_survey(base), name=name, report=report)
    elif fmt == "global-opinions":
        from selfalign.loaders.global_opinions import read_global_opinions

        if len(files) != 1:
            raise SelfAlignError(f"global-opinions takes exactly one CSV file, not {len(files)}")
        survey = read_global_opinions(files[0], name=name, sample_variants=sample_variants, report=report)
    else:
        from selfalign.loaders.tidy import read_tidy

        if len(files) != 1 or questions_file is None:
            raise SelfAlignError("tidy takes one answers CSV and --questions QUESTIONS_CSV")
        survey = read_tidy(files[0], questions_file, name=name, sample_variants=sample_variants, report=report)
    write_bundled(survey, target, overwrite=force)
    click.echo(
        f"imported {len(survey.questions)} questions x {len(survey.countries)} countries into {target}"
        f" (load it with --survey {name if out_dir is None else target})"
    )
    summary = report.summary()
    if summary:
        click.echo(summary)
    if verbose:
        for line in report.details():
            click.echo(line)
