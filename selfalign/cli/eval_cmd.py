"""``selfalign compare``, ``selfalign eval`` and ``selfalign report``: run grids of probes and summarise them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from selfalign import DEFAULT_MODEL, DEFAULT_SURVEY
from selfalign.cli.console import make_console
from selfalign.cli.options import client_settings, model_options, open_cache_or_fail

DEFAULT_COUNTRIES = "NGA,DEU,JPN"
DEFAULT_PROGRAMS = "zero-shot,persona,self-align-random,self-align-chrf,self-align-concordance"
DEFAULT_LIMIT = 30  # questions per country: the no-argument compare finishes in a few minutes on 2 CPU cores
INTERRUPTED_EXIT = 130


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _ints(value: str, what: str) -> list[int]:
    try:
        return [int(v) for v in _split_list(value)]
    except ValueError:
        raise click.BadParameter(f"{what} must be whole numbers separated by commas, got {value!r}") from None


def _run(
    spec: Any, out: Path, cache_dir: str | None, concurrency: int | None, settings: dict[str, Any], console: Console
) -> Any:
    """Run a spec; on Ctrl-C print the resume hint and exit 130."""
    from selfalign.runner import RunInterrupted, run_spec

    try:
        console.print(f"run folder: {out}")
        return run_spec(
            spec, out, cache_dir=cache_dir, concurrency=concurrency, client_settings=settings, console=console
        )
    except RunInterrupted as exc:
        click.echo(str(exc), err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # The log is closed and fsynced and the tables are written. Model calls that were already queued go on
        # in the model layer's background threads, and a normal interpreter exit waits for them (or, with
        # LiteLLM's finalisers, can hang): leave at once, as a kill would, which the run survives by design.
        os._exit(INTERRUPTED_EXIT)


COPY_ROW = "  copying its demos, no model"


def _summary_table(title: str, rows: Any, has_baseline: bool) -> Table:
    """The summary of ``rows``; under each demonstration program, a row for the model-free reference of copying
    its shown demonstrations' answers (:mod:`selfalign.references`), when the summary has one."""
    from selfalign.report import fmt_ci, fmt_p

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("program", no_wrap=True)
    for column in ("probes", "failed", "agreement % [95% CI]", "JS similarity"):
        table.add_column(column, justify="right", no_wrap=True)
    if has_baseline:
        table.add_column("vs zero-shot, pp [95% CI]", justify="right", no_wrap=True)
        table.add_column("p", justify="right", no_wrap=True)
    for r in rows.itertuples():
        cells = [
            str(r.variant),
            str(int(r.n_probes)),
            str(int(r.n_failed)),
            fmt_ci(r.agreement_mean, r.agreement_ci_low, r.agreement_ci_high),
            f"{r.js_similarity_mean:.3f}",
        ]
        if has_baseline:
            compared = r.diff_vs_zero_shot == r.diff_vs_zero_shot  # not NaN
            cells.append(fmt_ci(r.diff_vs_zero_shot, r.diff_ci_low, r.diff_ci_high) if compared else "")
            cells.append(fmt_p(r.p_value) if compared else "")
        table.add_row(*cells)
        if r.copy_agreement_mean == r.copy_agreement_mean:  # not NaN: a demonstration program
            copy = [
                COPY_ROW,
                str(int(r.copy_n)),
                "",
                fmt_ci(r.copy_agreement_mean, r.copy_agreement_ci_low, r.copy_agreement_ci_high),
                f"{r.copy_js_similarity_mean:.3f}",
            ]
            table.add_row(*copy, *([""] * (len(table.columns) - len(copy))), style="dim")
    return table


def _print_summary(result: Any, console: Console, *, per_country: bool) -> Path:
    """Print the overall (and per-country) tables and write ``summary.csv`` next to the run table."""
    from selfalign.report import SUMMARY_CSV, summary_frame

    summary = summary_frame(result.table)
    has_baseline = summary["diff_vs_zero_shot"].notna().any()
    if per_country:
        for country, rows in summary[summary["scope"] == "country"].groupby("country", sort=True):
            console.print(_summary_table(f"{country}", rows, has_baseline))
    console.print(_summary_table("Overall", summary[summary["scope"] == "overall"], has_baseline))
    if summary["copy_agreement_mean"].notna().any():
        console.print(
            f"{COPY_ROW.strip()}: the model-free reference, answering what the program's shown demonstrations "
            "answered (their majority; see selfalign.references)"
        )
    path = result.out_dir / SUMMARY_CSV
    summary.to_csv(path, index=False)
    failed = f"; {result.n_failed} failed (excluded from metrics)" if result.n_failed else ""
    hits = sum(int(s.get("cache_hits", 0) or 0) for s in result.stats.values())
    console.print(
        f"{result.n_done} probes in {result.wall_s:.0f} s: {result.n_model_calls} distinct prompts scored "
        f"({hits} from the model cache); {result.n_resumed} rows resumed from the log, "
        f"{result.n_reused} reused a logged answer{failed}"
    )
    console.print(f"run table: {result.table_path}")
    console.print(f"summary:   {path}")
    return path


def _robustness_grids(value: str, protocol: str, grid: dict[str, Any]) -> list[dict[str, Any]]:
    """One grid per perturbation of ``--robustness`` (the unperturbed one first): a comma-separated list of
    perturbations such as ``order=reversed,words=yes-no,template=interview`` (``+`` combines changes) and
    ``standard`` (:func:`selfalign.perturbations.standard_perturbations`)."""
    from selfalign.errors import UnknownChoiceError
    from selfalign.perturbations import PERTURBATION_NAMES, UNPERTURBED, parse_perturbation, standard_perturbations

    chosen = [UNPERTURBED]
    for item in _split_list(value):
        if item == "standard":
            chosen.extend(standard_perturbations(protocol))
            continue
        try:
            chosen.append(parse_perturbation(item))
        except UnknownChoiceError as exc:
            if exc.kind != "perturbation":
                raise
            raise UnknownChoiceError(
                "perturbation", exc.value, ["standard", *PERTURBATION_NAMES], list_all=True
            ) from None
    grids = []
    for p in dict.fromkeys(chosen):
        axes = {"option_orders": [p.option_order], "answer_words": [p.answer_words], "templates": [p.template]}
        grids.append({**grid, **axes})
    return grids


def _signed_ci(mean: float, low: float, high: float) -> str:
    """``"+4.2 [+0.3, +8.1]"``; empty for NaN."""
    return "" if mean != mean else f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"


def _print_robustness(result: Any, console: Console) -> Path | None:
    """Print the robustness tables of a run with several perturbations and write ``robustness.csv`` (nothing when
    no probe was answered)."""
    from selfalign.report import BASELINE, analysis_table, fmt_ci
    from selfalign.robustness import (
        ROBUSTNESS_CSV,
        perturbation_rows,
        program_rows,
        robustness_frame,
        spread,
    )

    if not result.table["ok"].any():
        return None
    robust = robustness_frame(analysis_table(result.table), baseline=BASELINE)
    if robust.empty:  # a single perturbation
        return None
    rows = perturbation_rows(robust)
    for variant in dict.fromkeys(rows["variant"]):
        title = f"{variant}: under each perturbation (95% intervals; pp: percentage points)"
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
        table.add_column("perturbation", no_wrap=True)
        for column in ("probes", "agreement %", "vs unperturbed, pp", "answers flipped %", "vs zero-shot, pp"):
            table.add_column(column, justify="right", no_wrap=True)
        for r in rows[rows["variant"] == variant].itertuples():
            table.add_row(
                str(r.perturbation),
                str(int(r.n_probes)),
                fmt_ci(r.agreement_mean, r.agreement_ci_low, r.agreement_ci_high),
                _signed_ci(r.delta_vs_unperturbed, r.delta_ci_low, r.delta_ci_high),
                fmt_ci(r.flip_pct, r.flip_ci_low, r.flip_ci_high),
                _signed_ci(r.gain_vs_baseline, r.gain_ci_low, r.gain_ci_high),
            )
        console.print(table)
    summary = Table(title="Robustness per program", title_justify="left", box=box.SIMPLE_HEAD)
    summary.add_column("program", no_wrap=True)
    for column in ("perturbations", "agreement % mean ± SD [min, max]", "flipped % (mean, max)"):
        summary.add_column(column, justify="right", no_wrap=True)
    summary.add_column("gain over zero-shot holds", justify="right", no_wrap=True)
    for r in program_rows(robust).itertuples():
        holds = getattr(r, "n_gain_holds", float("nan"))
        verdict = "" if holds != holds else f"{'yes' if r.gain_holds else 'no'} ({int(holds)} of {r.n_perturbations})"
        flips = "-" if r.flip_pct != r.flip_pct else f"{r.flip_pct:.1f}, {r.flip_pct_max:.1f}"
        summary.add_row(
            str(r.variant),
            str(int(r.n_perturbations)),
            spread(r.agreement_mean, r.agreement_sd, r.agreement_min, r.agreement_max),
            flips,
            verdict,
        )
    console.print(summary)
    console.print("(the summary tables before the robustness tables pool every perturbation)")
    path = result.out_dir / ROBUSTNESS_CSV
    robust.to_csv(path, index=False)
    console.print(f"robustness: {path}")
    return path


def _fail_if_nothing_answered(result: Any) -> None:
    """A run whose every probe failed ends with one error line and exit code 1 (the table is kept)."""
    if result.n_done and result.n_failed == result.n_done:
        errors = result.table["error"].dropna()
        first = str(errors.iloc[0]) if len(errors) else "no error recorded"
        click.echo(f"error: all {result.n_done} probes failed (first error: {first})", err=True)
        raise SystemExit(1)


@click.command()
@click.option("--survey", default=DEFAULT_SURVEY, show_default=True, help="Survey name or folder.")
@click.option("--countries", default=DEFAULT_COUNTRIES, show_default=True, help="Comma-separated codes, or 'all'.")
@click.option("--programs", default=DEFAULT_PROGRAMS, show_default=True, help="Comma-separated program names.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model string or alias (comma-separated).")
@click.option("-k", "k", default="5", show_default=True, help="Demonstrations per probe (comma-separated list).")
@click.option("--protocol", default="binary", show_default=True, help="binary or options.")
@click.option("--split", default="test", show_default=True, help="test, dev or all.")
@click.option("--split-seed", default=0, show_default=True, type=int)
@click.option("--test-fraction", default=0.3, show_default=True, type=float)
@click.option("--lang", default="en", show_default=True, help="Question language(s), or 'native'.")
@click.option("--demo-lang", default="same", show_default=True, help="Demonstration language: same, native or a code.")
@click.option("--seed", default="0", show_default=True, help="Seed(s) for random demonstrations (comma-separated).")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="At most N test questions per country, taken round-robin over topics; 0 = every question.",
)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder [runs/compare-<hash>].")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Model-result cache folder.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Model calls in flight at once.")
@click.option(
    "--robustness",
    default=None,
    help="Also run perturbations of the prompt and print how robust each program is: 'standard' or a list such "
    "as order=reversed,order=shuffle:1,words=yes-no,template=interview ('+' combines).",
)
@model_options
def compare(
    survey: str,
    countries: str,
    programs: str,
    model: str,
    k: str,
    protocol: str,
    split: str,
    split_seed: int,
    test_fraction: float,
    lang: str,
    demo_lang: str,
    seed: str,
    limit: int,
    out: str | None,
    cache_dir: str | None,
    concurrency: int | None,
    robustness: str | None,
    api_base: str | None,
    timeout: float | None,
    retries: int | None,
    retry_invalid: bool,
) -> None:
    """Compare programs side by side on a question split; prints tables per country and overall.

    With no arguments: the embedded model, Nigeria, Germany and Japan, binary protocol, 30 test questions per
    country, zero-shot, persona and self-alignment (random, chrF++, and the learned value-structure selection
    self-align-concordance) at k = 5; a few minutes on two CPU cores.
    Use --limit 0 for the whole test split. Resumable: run the same command again to continue. --robustness runs
    each program under perturbations of its prompt too (option order, answer words, template).
    """
    from selfalign.specs import parse_spec, validate_spec

    console = make_console()
    data: dict[str, Any] = {
        "name": "compare",
        "survey": survey,
        "protocol": protocol,
        "split": split,
        "split_seed": split_seed,
        "test_fraction": test_fraction,
        "seeds": _ints(seed, "--seed"),
        "models": _split_list(model),
        "languages": _split_list(lang),
        "demo_languages": _split_list(demo_lang),
        "grid": [
            {
                "programs": _split_list(programs),
                "k": _ints(k, "-k"),
                "countries": "all" if countries.strip().lower() == "all" else _split_list(countries),
            }
        ],
    }
    if limit:
        data["limit"] = limit
    if robustness:
        data["grid"] = _robustness_grids(robustness, protocol, data["grid"][0])
    spec = validate_spec(parse_spec(data, source="selfalign compare"))
    folder = Path(out) if out else Path("runs") / f"compare-{spec.settings_hash()}"
    open_cache_or_fail(cache_dir)
    result = _run(
        spec, folder, cache_dir, concurrency, client_settings(api_base, timeout, retries, retry_invalid), console
    )
    _print_summary(result, console, per_country=True)
    _print_robustness(result, console)
    _fail_if_nothing_answered(result)


@click.command("eval")
@click.argument("spec")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder [runs/<spec name>].")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Model-result cache folder.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Model calls in flight at once.")
@click.option("--per-country/--no-per-country", default=False, help="Also print a table per country.")
@model_options
def eval_spec(
    spec: str,
    out: str | None,
    cache_dir: str | None,
    concurrency: int | None,
    per_country: bool,
    api_base: str | None,
    timeout: float | None,
    retries: int | None,
    retry_invalid: bool,
) -> None:
    """Run an experiment SPEC (a TOML file, or a bundled name such as 'smoke' or 'paper') into a run table.

    Resumable: run the same command again after an interruption to continue where it stopped.
    """
    from selfalign.specs import load_spec

    console = make_console()
    experiment = load_spec(spec)
    folder = Path(out) if out else Path("runs") / experiment.name
    open_cache_or_fail(cache_dir)
    result = _run(
        experiment, folder, cache_dir, concurrency, client_settings(api_base, timeout, retries, retry_invalid), console
    )
    _print_summary(result, console, per_country=per_country)
    _print_robustness(result, console)
    console.print(f"report:    selfalign report {folder}")
    _fail_if_nothing_answered(result)


@click.command()
@click.argument("run_dir", type=click.Path(exists=True))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Where to write [RUN_DIR].")
def report(run_dir: str, out: str | None) -> None:
    """Render RUN_DIR/report.md and RUN_DIR/report.html (self-contained) from the stored run table."""
    from selfalign.report import render_report

    md_path, html_path = render_report(run_dir, out)
    click.echo(f"markdown: {md_path}")
    click.echo(f"html:     {html_path}")
