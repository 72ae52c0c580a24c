"""``selfalign programs`` and ``selfalign ask``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from selfalign import DEFAULT_MODEL, DEFAULT_SURVEY
from selfalign.cli.console import make_console
from selfalign.cli.options import client_settings, model_options
from selfalign.survey import Protocol


@click.command()
def programs() -> None:
    """List the named alignment programs (and compiled ones), one line each."""
    from rich.markup import escape

    from selfalign.programs import COMPILED_PREFIX, named_programs

    table = Table(title="Programs")
    table.add_column("name")
    table.add_column("description")
    for name, spec in named_programs(include_unavailable=True).items():
        note = "" if spec.available else f" [not installed: pip install 'selfalign[{spec.requires}]']"
        table.add_row(escape(name), escape(spec.description + note))  # "selfalign[embedding]" is not markup
    try:
        from selfalign.optimize import compiled_programs
    except ImportError:  # pragma: no cover
        compiled_programs = None  # type: ignore[assignment]
    if compiled_programs is not None:
        for name, meta in compiled_programs().items():
            table.add_row(escape(COMPILED_PREFIX + name), escape(str(meta.get("description", "compiled program"))))
    make_console().print(table)


@click.command()
@click.option("--country", required=True, help="ISO3 code or English name.")
@click.option("--question", "question_id", required=True, help="Question id, e.g. Q164.")
@click.option("--program", "program_name", default="self-align-chrf", show_default=True, help="Program name.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="LiteLLM model string or configured alias.")
@click.option("-k", "k", type=int, default=None, help="Number of demonstrations (default: the program's).")
@click.option(
    "--protocol",
    type=click.Choice([p.value for p in Protocol]),
    default="binary",
    show_default=True,
    help="binary: the paper's two-sided statement; options: the full WVS option list.",
)
@click.option("--lang", default="en", show_default=True, help="Language of the question (or 'native').")
@click.option("--demo-lang", default=None, help="Language of the demonstrations (default: --lang; or 'native').")
@click.option("--survey", "survey_name", default=DEFAULT_SURVEY, show_default=True, help="Survey name or folder.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random demonstration choices.")
@click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Result cache folder."
)
@model_options
def ask(
    country: str,
    question_id: str,
    program_name: str,
    model: str,
    k: int | None,
    protocol: str,
    lang: str,
    demo_lang: str | None,
    survey_name: str,
    seed: int,
    cache_dir: Path | None,
    api_base: str | None,
    timeout: float | None,
    retries: int | None,
    retry_invalid: bool,
) -> None:
    """Ask one question as one country: the demonstrations used, the model's distribution, the real shares."""
    from selfalign.loaders import load_survey
    from selfalign.models import dspy_lm
    from selfalign.programs import Probe, ProgramContext, load_program

    survey = load_survey(survey_name)
    code = survey.resolve_country(country)
    question = survey.question(question_id)
    lang = survey.native_language(code) if lang == "native" else survey.resolve_language(lang)
    if demo_lang == "native":
        demo_lang = survey.native_language(code)
    program = load_program(program_name, k=k, survey=survey, model=model)
    settings = client_settings(api_base, timeout, retries, retry_invalid)
    lm = dspy_lm(model, cache_dir=cache_dir, **settings)
    probe = Probe(question.id, code, lang, Protocol(protocol), demo_lang, seed)
    prediction = program(probe, context=ProgramContext.for_survey(survey), lm=lm)
    prepared, distribution = prediction.prepared, prediction.distribution

    console = make_console()
    console.print(
        f"[bold]{code}[/bold] ({survey.country_names[code]}), {question.id} [{question.topic}], "
        f"program {program.program_name}, model {model}, protocol {protocol}, language {lang}"
    )
    if prepared.persona:
        console.print("Persona: yes")
    if prepared.demonstrations:
        demos = Table(title=f"Demonstrations ({len(prepared.demonstrations)}, in prompt order)")
        demos.add_column("question")
        demos.add_column("shown text")
        demos.add_column("answer shown")
        demos.add_column("similarity", justify="right")
        for d in prepared.demonstrations:
            similarity = "" if d.similarity is None else f"{d.similarity:.3f}"
            demos.add_row(d.question_id, d.text, d.answer, similarity)
        console.print(demos)
    shown_text = question.binary.statement(lang) if protocol == "binary" and question.binary else question.text(lang)
    console.print(f"Test question: {shown_text}")
    answers = survey.distribution(code, question.id)
    if protocol == "binary" and question.binary is not None:
        real = answers.side_shares(question.binary)
    else:
        real = tuple(answers.vector(question.option_codes))
    table = Table(title="Model vs country")
    table.add_column("option")
    table.add_column("model", justify="right")
    table.add_column(f"{code} (real)", justify="right")
    best_model = distribution.argmax
    best_real = max(range(len(real)), key=lambda i: real[i])
    for i, label in enumerate(prepared.prompt.options):
        model_cell = f"{100 * distribution.probs[i]:.1f}%" if distribution.ok else "-"
        if i == best_model:
            model_cell = f"[bold]{model_cell}[/bold]"
        real_cell = f"{100 * real[i]:.1f}%"
        if i == best_real:
            real_cell = f"[bold]{real_cell}[/bold]"
        table.add_row(label, model_cell, real_cell)
    console.print(table)
    if not distribution.ok:
        reason = distribution.error or f"invalid answer {distribution.raw_answer!r}"
        console.print(f"[red]model gave no usable answer: {reason}[/red]")
        raise SystemExit(1)
    verdict = "agrees" if best_model == best_real else "disagrees"
    console.print(
        f"Model's answer {verdict} with the country's majority. Method: {distribution.method.value}, "
        f"off-option mass {distribution.off_option_mass:.3f}{', cached' if distribution.cached else ''}."
    )
