"""``selfalign optimize``: learn how demonstrations are selected for a country and save a compiled program."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from selfalign import DEFAULT_MODEL, DEFAULT_SURVEY
from selfalign.cli.console import make_console
from selfalign.cli.options import client_settings, model_options
from selfalign.survey import Protocol


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _pct(score: dict[str, Any] | None, key: str = "agreement") -> str:
    if not score or score.get(key) is None:
        return "-"
    value = score[key]
    return f"{100 * value:.1f}" if key == "agreement" else f"{value:.3f}"


@click.command()
@click.option("--country", default=None, help="ISO3 code or English name of the country to optimize for.")
@click.option(
    "--countries", default=None, help="Comma-separated countries, or 'all': one pooled program for all of them."
)
@click.option("--survey", default=DEFAULT_SURVEY, show_default=True, help="Survey name or folder.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model string or configured alias.")
@model_options
@click.option("--protocol", type=click.Choice([p.value for p in Protocol]), default="binary", show_default=True)
@click.option("--budget", type=int, default=None, help="Most model calls the search may make [1000].")
@click.option(
    "--objective",
    type=click.Choice(["agreement", "js"]),
    default="agreement",
    show_default=True,
    help="What the search maximizes: agreement with the country's majority (JS similarity breaks ties), or js: "
    "the JS similarity (1 - JS distance) of the answer distribution to the country's (agreement breaks ties).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the search's random choices.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the dev/test question split.")
@click.option("--test-fraction", type=float, default=0.3, show_default=True)
@click.option("--name", default=None, help="Compiled program name [<country>-<model>-<protocol>].")
@click.option(
    "--search",
    "stages",
    default="config,ranking",
    show_default=True,
    help="Stages: config, ranking, learned (LearnedSelection: weights over value structure, chrF++, BM25, topic, "
    "battery, answer clarity and same options, one pooled program), dspy (LabeledFewShot, BootstrapFewShot, "
    "BootstrapFewShotWithRandomSearch), mipro (MIPROv2), gepa (GEPA; needs --reflection-model).",
)
@click.option(
    "--no-battery", is_flag=True, help="Never show a question of the test question's battery (every candidate)."
)
@click.option("--reflection-model", default=None, help="Model that writes instructions for the gepa stage.")
@click.option("--prompt-model", default=None, help="Model that proposes instructions for the mipro stage [--model].")
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True, help="DSPy optimizer threads.")
@click.option("--lang", default="en", show_default=True, help="Language of questions and demonstrations.")
@click.option("--dev-limit", type=int, default=None, help="At most N dev questions per country (quick runs).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Parent folder [programs/compiled].")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Model-result cache folder.")
@click.option("--no-test", is_flag=True, help="Skip scoring the compiled program on the test questions.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def optimize(
    country: str | None,
    countries: str | None,
    survey: str,
    model: str,
    api_base: str | None,
    timeout: float | None,
    retries: int | None,
    retry_invalid: bool,
    protocol: str,
    budget: int | None,
    objective: str,
    seed: int,
    split_seed: int,
    test_fraction: float,
    name: str | None,
    stages: str,
    no_battery: bool,
    reflection_model: str | None,
    prompt_model: str | None,
    threads: int,
    lang: str,
    dev_limit: int | None,
    out: str | None,
    cache_dir: str | None,
    no_test: bool,
    quiet: bool,
) -> None:
    """Learn, on dev questions only, how demonstrations are chosen for a country; save a compiled program.

    The search scores candidate selections (strategy, k, answer form, order, persona; a learned ranking of
    which questions make useful demonstrations; optionally DSPy's optimizers) by agreement with the
    country's answers on dev questions (or by JS similarity: --objective js), picks the best on held-out dev
    questions, then scores it once on the test questions. Use it as `compiled:NAME` in `selfalign compare`,
    `eval` and `ask`.
    """
    from selfalign.errors import SelfAlignError
    from selfalign.models.redact import redact
    from selfalign.optimize import DEFAULT_BUDGET, SearchSpace
    from selfalign.optimize import optimize as run_optimize

    codes = _split_list(countries) + ([country] if country else [])
    if not codes:
        raise SelfAlignError("give --country C (or --countries A,B,C for a pooled program)")
    console = make_console(stderr=True)
    space = SearchSpace(stages=tuple(_split_list(stages)), exclude_battery=no_battery)
    options: dict[str, Any] = {"threads": threads}
    if reflection_model:
        options["reflection_model"] = reflection_model
    if prompt_model:
        options["model"] = prompt_model
    result = run_optimize(
        codes,
        survey=survey,
        model=model,
        protocol=protocol,
        budget=DEFAULT_BUDGET if budget is None else budget,
        seed=seed,
        split_seed=split_seed,
        test_fraction=test_fraction,
        name=name,
        space=space,
        lang=lang,
        out=out,
        cache_dir=cache_dir,
        client_settings=client_settings(api_base, timeout, retries, retry_invalid),
        dev_limit=dev_limit,
        evaluate_test=not no_test,
        progress=not quiet,
        console=console,
        dspy_options=options,
        objective=objective,
    )
    meta = result.meta
    out_console = make_console()
    title = f"Finalists ({', '.join(meta['countries'])}, {meta['model']}, {meta['protocol']}, objective {objective})"
    table = Table(title=title)
    for column in ("candidate", "origin", "search agr %", "validation agr %", "validation JS"):
        table.add_column(column, justify="left" if column in ("candidate", "origin") else "right")
    for row in meta["finalists"]:
        chosen = " *" if row["label"] == meta["chosen"] else ""
        table.add_row(
            row["label"] + chosen, row["origin"], _pct(row["search"]), _pct(row["validation"]),
            _pct(row["validation"], "js_similarity"),
        )  # fmt: skip
    out_console.print(table)
    test = meta.get("test_score")
    if test:
        out_console.print(
            f"test questions (scored after the search): agreement {_pct(test)} %, JS similarity "
            f"{_pct(test, 'js_similarity')} on {test['n_items']} probes"
        )
    out_console.print(
        f"calls: {meta['calls_spent']} by the search (budget {meta['budget']}, {meta['planned_calls']} planned), "
        f"{meta['test_calls']} on test; {meta['total_seconds']:.0f} s"
    )
    learned = (meta.get("learned_selection") or {}).get("fit")
    if learned:
        weights = ", ".join(f"{name} {w:+.3g}" for name, w in learned["weights"].items())
        out_console.print(
            f"learned selection: weights {weights} (fitted without a model on {learned['examples']} dev examples of "
            f"{learned['countries']} countries); on the model: {meta['learned_selection']['model_stage']['chosen']}",
            markup=False,
        )
    for note in meta.get("notes", []):
        out_console.print(f"note: {note}")
    if result.path is not None:
        out_console.print(f"saved: {result.path}")
    program = f"compiled:{result.name}" if out is None else str(result.path)
    served = (f" --model {model}" if model != DEFAULT_MODEL else "") + (f" --api-base {api_base}" if api_base else "")
    out_console.print(
        redact(
            f"compare: selfalign compare --countries {','.join(meta['countries'])} "
            f"--programs self-align-chrf,{program}{served}"
        ),
        markup=False,
    )
