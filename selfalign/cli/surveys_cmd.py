"""``selfalign surveys``: list, show and import surveys."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from selfalign.errors import SelfAlignError
from selfalign.loaders import available_surveys, load_survey, write_bundled
from selfalign.paths import user_surveys_dir
from selfalign.survey import Survey

IMPORT_FORMATS = ("wvs-microdata", "global-opinions", "tidy")


@click.group()
def surveys() -> None:
    """List, show and import surveys (bundled, imported, or a folder path)."""


@surveys.command("list")
def list_surveys() -> None:
    """List the surveys selfalign can load by name."""
    table = Table(title="Surveys")
    for column in ("name", "questions", "countries", "topics", "languages", "binary-capable", "path"):
        table.add_column(column)
    for name, path in available_surveys().items():
        try:
            survey = load_survey(path)
        except SelfAlignError as exc:
            table.add_row(name, "-", "-", "-", "-", "-", f"{path} (broken: {exc})")
            continue
        binary = sum(1 for q in survey.questions if q.supports("binary"))
        table.add_row(
            name,
            str(len(survey.questions)),
            str(len(survey.countries)),
            str(len(survey.topics)),
            ",".join(survey.languages),
            str(binary),
            str(path),
        )
    Console().print(table)


def _show_overview(survey: Survey, console: Console) -> None:
    console.print(f"[bold]{survey.name}[/bold]: {survey.metadata.get('title', '')}")
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
        table.add_row(topic, str(len(qs)), str(sum(q.supports("binary") for q in qs)))
    console.print(table)
    console.print("Countries: " + ", ".join(f"{c} ({survey.country_names[c]})" for c in survey.countries))


def _show_question(survey: Survey, qid: str, countries: list[str], lang: str, console: Console) -> None:
    q = survey.question(qid)
    console.print(f"[bold]{q.id}[/bold] [{q.topic}] ({q.scale.value}{', battery ' + q.battery if q.battery else ''})")
    console.print(escape(q.text(lang)))
    if q.binary:
        agree, disagree = survey.side_labels(lang)
        console.print(
            f'Binary statement: "{escape(q.binary.statement(lang))}"  {agree}: {", ".join(q.binary.agree_codes)}'
            f"  {disagree}: {', '.join(q.binary.disagree_codes)}"
        )
    elif q.binary_skip_reason:
        console.print(f"Binary protocol: skipped ({q.binary_skip_reason})")
    if q.note:
        console.print(f"Note: {q.note}")
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
        table.add_column(country, justify="right")
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
        table.add_row(code, escape(option.label(lang)), *cells)
    console.print(table)
    for country in shown:
        a = survey.answers[(country, q.id)]
        side = survey.majority_side(country, q.id)
        n = f"n={a.n_respondents}" if a.n_respondents else "n unknown"
        console.print(
            f"{country} ({survey.country_names[country]}): majority option {a.majority_option}"
            + (f", majority side: {side}" if side else "")
            + f"; {n}, {'weighted' if a.weighted else 'unweighted'}, source {a.source}"
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
    console = Console(width=max(Console().width, 100))
    if question_id:
        _show_question(survey, question_id, wanted, lang, console)
        return
    if topic:
        resolved = survey.resolve_topic(topic)
        table = Table(title=resolved)
        table.add_column("id")
        table.add_column("question")
        table.add_column("options", justify="right")
        table.add_column("binary")
        for q in survey.questions_of_topic(resolved):
            table.add_row(q.id, escape(q.text(lang)), str(len(q.options)), "yes" if q.supports("binary") else "no")
        console.print(table)
        if wanted:
            for country in wanted:
                console.print(
                    f"{country}: majority options "
                    + ", ".join(
                        f"{q.id}={survey.majority_option(country, q.id)}"
                        for q in survey.questions_of_topic(resolved)
                        if survey.has_answers(country, q.id)
                    )
                )
        return
    if wanted:
        for country in wanted:
            answered = [q for q in survey.questions if survey.has_answers(country, q.id)]
            console.print(f"{country} ({survey.country_names[country]}): answers to {len(answered)} questions")
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
@click.option("--force", is_flag=True, help="Replace an existing survey of that name.")
def import_survey(
    fmt: str,
    files: tuple[Path, ...],
    name: str,
    questions_file: Path | None,
    base: str,
    out_dir: Path | None,
    force: bool,
) -> None:
    """Import FILE... in FORMAT as a survey folder in the bundled format (written atomically)."""
    if fmt == "wvs-microdata":
        from selfalign.loaders.wvs_microdata import read_wvs_microdata

        survey = read_wvs_microdata(list(files), load_survey(base), name=name)
    elif fmt == "global-opinions":
        from selfalign.loaders.global_opinions import read_global_opinions

        if len(files) != 1:
            raise SelfAlignError("global-opinions takes exactly one CSV file")
        survey = read_global_opinions(files[0], name=name)
    else:
        from selfalign.loaders.tidy import read_tidy

        if len(files) != 1 or questions_file is None:
            raise SelfAlignError("tidy takes one answers CSV and --questions QUESTIONS_CSV")
        survey = read_tidy(files[0], questions_file, name=name)
    target = (out_dir or user_surveys_dir()) / name
    write_bundled(survey, target, overwrite=force)
    click.echo(
        f"imported {len(survey.questions)} questions x {len(survey.countries)} countries into {target}"
        f" (load it with --survey {name if out_dir is None else target})"
    )
