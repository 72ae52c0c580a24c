"""``selfalign optimize``: from a budget of model calls to a compiled program.

Data. Questions are split into dev and test (:func:`selfalign.splits.split_questions`); the search sees
dev questions only. Dev is halved, per topic, into *search* questions (where candidates are scored and
compared) and *validation* questions (where the finalists are compared once, to limit overfitting to the
search half). Demonstrations always come from the dev pool and never show the question being asked. The
country's answers to test questions are read once, after the search has ended, to score the chosen program.

Stages (``--search``, default ``config,ranking``), each given a share of the budget:

``config``
    Successive halving over demonstration settings sampled from the :class:`SearchSpace` grid (strategy,
    k, answer form, order, with or without persona), the paper's ``self-align-chrf`` always included:
    every candidate is scored on a few search questions, the better half goes on to twice as many
    questions, until two remain, scored on all search questions.
``ranking``
    Learns which dev questions make useful demonstrations for the country (or pooled countries). Every
    scored prompt with demonstrations is evidence: its outcome minus the mean outcome of all prompts for
    the same (country, question) is credited to each demonstration it showed (shrunk towards 0 by a prior
    count of 2). Random demonstration sets scored on a batch of search questions (a bandit's exploration;
    prompts with the same demonstrations share their prefix, so they are cheap) add evidence. The ranking
    (most useful first) becomes :class:`~selfalign.programs.RankedDemonstrationsPart` candidates: the best
    config's similarity strategy (chrF++ unless it is BM25) choosing among the learned top 80% and 60% of
    the dev questions (``rerank``/``shortlist``: harmful demonstrations pruned, similarity still picks per
    question), and, when the budget share allows a shortlist of at least 4, a fixed set whose first
    positions are chosen by greedy forward selection on search questions.
``learned``
    :class:`~selfalign.optimize.learned.LearnedSelection`, a DSPy optimizer: weights over the evidence about
    each candidate demonstration (value-structure concordance and association, chrF++, BM25, topic, battery,
    how clear the country's answer is, same options) fitted without a model on every search question of every
    country, then k and order (and the single features, for reference) tuned on the model on the search items. One
    pooled program for all countries, including unseen ones (``--countries all``).
``dspy``
    DSPy's optimizers driven by the project's metric (see :mod:`selfalign.optimize.dspy_opt`).
``mipro``
    MIPROv2 instruction proposals (needs a generating LM; poor with the tiny embedded model; not default).
``gepa``
    GEPA: instructions evolved by a reflection LM from feedback on the answers (not default).

Finalists (the paper default, then the other candidates by search score) are scored on the validation
questions while the budget lasts. The best objective (``--objective``: agreement with JS similarity as
tie-break, or JS similarity with agreement as tie-break) replaces the paper default only when its paired
advantage on validation has a sign-flip p-value below :data:`SWITCH_P`; the decision and its numbers go to
``meta.json``. Budget shares are planned from counted prompts (see :mod:`selfalign.optimize.evaluate`), so a
run is reproducible with a warm or cold cache.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfalign import DEFAULT_MODEL, DEFAULT_SURVEY, __version__
from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.optimize.evaluate import OBJECTIVES, Evaluator, Item, Score, aggregate
from selfalign.optimize.progress import Progress
from selfalign.optimize.search import Search
from selfalign.optimize.space import STAGES, Candidate, Scored, SearchSpace, by_score, paper_default
from selfalign.programs import AlignmentProgram
from selfalign.programs.compiled import check_name, default_save_dir, save_compiled
from selfalign.retrieval import stable_seed
from selfalign.splits import QuestionSplit, split_questions
from selfalign.survey import Protocol, Survey

DEFAULT_BUDGET = 700
"""Planned model calls of a default run (8.5-9.3 min measured for EGY on 2 busy CPU cores, embedded model)."""
FINAL_SHARE = 0.3
STAGE_WEIGHTS: dict[str, float] = {
    "config": 1.3, "ranking": 0.7, "learned": 1.3, "dspy": 0.6, "mipro": 0.6, "gepa": 0.6,
}  # fmt: skip
SWITCH_P = 0.1
"""The best finalist replaces the paper default only when it beats it on the validation questions with a
paired sign-flip p-value below this (on the search's objective, clustered by question): the search compares several
finalists on the same ~75 validation questions, and smaller margins are mostly noise."""


@dataclass
class OptimizeResult:
    """What :func:`optimize` returns: the compiled program, its metadata and where it was saved."""

    name: str
    program: AlignmentProgram
    meta: dict[str, Any]
    path: Path | None


def model_short(model: str) -> str:
    """``selfalign/gemma-3-270m`` -> ``gemma-3-270m`` (for default program names)."""
    short = model.rstrip("/").split("/")[-1]
    return "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in short) or "model"


def default_name(countries: Sequence[str], model: str, protocol: str) -> str:
    """``EGY-gemma-3-270m-binary``; pooled: ``pooled-DEU-IND-gemma-3-270m-binary``."""
    if len(countries) == 1:
        return f"{countries[0]}-{model_short(model)}-{protocol}"
    if len(countries) <= 5:
        return f"pooled-{'-'.join(countries)}-{model_short(model)}-{protocol}"
    tag = f"{stable_seed(*countries) % 16**6:06x}"
    return f"pooled{len(countries)}-{tag}-{model_short(model)}-{protocol}"


def _resolve_survey(survey: str | Survey) -> Survey:
    if isinstance(survey, Survey):
        return survey
    from selfalign.loaders import load_survey

    return load_survey(survey)


def _stage_allowances(stages: Sequence[str], searchable: int) -> dict[str, int]:
    weights = {s: STAGE_WEIGHTS[s] for s in stages}
    total = sum(weights.values())
    return {s: int(searchable * w / total) for s, w in weights.items()}


def optimize(
    countries: str | Sequence[str],
    *,
    survey: str | Survey = DEFAULT_SURVEY,
    model: str = DEFAULT_MODEL,
    protocol: str | Protocol = Protocol.BINARY,
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
    split_seed: int = 0,
    test_fraction: float = 0.3,
    name: str | None = None,
    space: SearchSpace | None = None,
    lang: str = "en",
    out: str | Path | None = None,
    save: bool = True,
    cache_dir: str | Path | None = None,
    client: Any = None,
    client_settings: dict[str, Any] | None = None,
    dev_limit: int | None = None,
    evaluate_test: bool = True,
    test_limit: int | None = None,
    progress: bool = False,
    console: Any = None,
    dspy_options: dict[str, Any] | None = None,
    objective: str = "agreement",
) -> OptimizeResult:
    """Search how demonstrations are chosen for ``countries`` on dev questions and compile the best program.

    ``countries``: one code (or a list, or ``"all"``: candidates are scored averaged over them; a pooled
    program). ``space.exclude_battery`` keeps every candidate, the paper default included, from showing a
    question of the test question's battery (the default then is ``self-align-chrf-no-battery``). The
    budget caps planned model calls of the search (see :mod:`selfalign.optimize.evaluate`); the final test
    evaluation (after the search, ``evaluate_test``) is extra and reported separately. ``out`` is the parent
    folder to save into (default: ``programs/compiled`` or the user's folder); ``dev_limit`` caps the dev
    questions used per country (quick runs and tests) and ``test_limit`` the test questions scored per
    country (tests only: the test score is then partial, as meta.json says). ``client_settings`` configure the
    model's client when ``client`` is not given (``api_base``, ``timeout_s``, ``max_retries``: see
    :func:`selfalign.models.client.shared_client`); the DSPy stages' task LM shares that client. Raises
    :class:`SelfAlignError` before any model call when the budget cannot evaluate even one candidate or a
    country has too few dev questions. ``objective`` (:data:`~selfalign.optimize.evaluate.OBJECTIVES`) is what
    every stage and the final choice maximize: ``agreement`` (JS similarity breaks ties) or ``js`` (the JS
    similarity of the distributions, agreement breaking ties; for the options protocol's full distributions).
    """
    started = time.monotonic()
    if objective not in OBJECTIVES:
        raise UnknownChoiceError("objective", objective, OBJECTIVES)
    space = space or SearchSpace()
    settings = {k: v for k, v in (client_settings or {}).items() if v is not None}
    data = _resolve_survey(survey)
    codes = [countries] if isinstance(countries, str) else list(countries)
    if [str(c).strip().lower() for c in codes] == ["all"]:
        codes = list(data.countries)
    codes = list(dict.fromkeys(data.resolve_country(c) for c in codes if str(c).strip()))
    if not codes:
        raise SelfAlignError("optimize needs at least one country")
    try:
        proto = Protocol(protocol)
    except ValueError:
        raise UnknownChoiceError("protocol", str(protocol), [p.value for p in Protocol]) from None
    lang = data.resolve_language(lang)
    if budget < 1:
        raise SelfAlignError(f"budget must be a positive number of model calls, not {budget}")
    program_name = check_name(name or default_name(codes, model, proto.value))
    target = Path(out).expanduser() / program_name if out is not None else default_save_dir() / program_name
    split = split_questions(data, protocol=proto, seed=split_seed, test_fraction=test_fraction)
    pool = frozenset(split.dev)

    if client is None:
        from selfalign.models.client import shared_client

        client = shared_client(model, cache_dir=cache_dir, **settings)
    calls_before = int(getattr(getattr(client, "stats", None), "calls", 0))

    if console is None and progress:
        from rich.console import Console

        console = Console(stderr=True)
    bar = Progress(progress, console, budget)
    evaluator = Evaluator(
        data, proto, pool, client, budget=budget, lang=lang, seed=seed, on_calls=bar.advance, objective=objective
    )
    search = Search(data, codes, proto, split, evaluator, space, seed, dev_limit, bar, model)

    default = paper_default(space.exclude_battery)
    one = search.cost(default, search.items("search") + search.items("validation"))
    if one > budget:
        n_q = sum(len(v) for v in search.search_items.values()) + sum(len(v) for v in search.val_items.values())
        raise SelfAlignError(
            f"a budget of {budget} model calls cannot evaluate even one candidate: scoring one program on the "
            f"{n_q} dev questions of {', '.join(codes)} takes {one} calls; use --budget {one} or more "
            f"(default {DEFAULT_BUDGET})"
        )

    stages = [s for s in STAGES if s in space.stages]
    searchable = max(0, int(budget * (1 - FINAL_SHARE)))
    allowance = _stage_allowances(stages, searchable)
    rows: list[Scored] = []
    with bar:
        carry = 0
        config_rows: list[Scored] = []
        if "config" in stages:
            start = evaluator.planned
            config_rows = search.stage_config(allowance["config"] + carry)
            carry = allowance["config"] + carry - (evaluator.planned - start)
            rows += config_rows[:2]
        best_config = next((r.candidate for r in by_score(config_rows) if r.search is not None), default)
        if "ranking" in stages:
            start = evaluator.planned
            rows += search.stage_ranking(allowance["ranking"] + carry, best_config)
            carry = allowance["ranking"] + carry - (evaluator.planned - start)
        learned_report: dict[str, Any] | None = None
        if "learned" in stages:
            from selfalign.optimize import learned

            start = evaluator.planned
            learned_rows, learned_report = learned.run_stage(search, allowance["learned"] + carry, best_config)
            rows += learned_rows
            carry = allowance["learned"] + carry - (evaluator.planned - start)
        for stage in ("dspy", "mipro", "gepa"):
            if stage in stages:
                from selfalign.optimize import dspy_opt

                start = evaluator.planned
                opts = {"cache_dir": cache_dir, "client_settings": settings, **(dspy_options or {})}
                rows += dspy_opt.run_stage(stage, search, allowance[stage] + carry, best_config, opts)
                carry = allowance[stage] + carry - (evaluator.planned - start)

        finalists = [Scored(default)]
        seen = {default.key}
        for row in by_score(rows):
            if row.candidate.key in seen or not row.candidate.eligible or row.search is None:
                continue
            seen.add(row.candidate.key)
            finalists.append(row)
        if finalists[0].search is None:  # the default, when the config stage did not score it
            finalists[0].search = search.try_score(default, search.items("search"), "finalist", budget)
        search.validate(finalists, budget)
    winner, selection = _choose(search, finalists)
    search_calls = int(getattr(getattr(client, "stats", None), "calls", 0)) - calls_before
    search_s = time.monotonic() - started

    description = _description(codes, winner.candidate)
    program = winner.candidate.build(name=f"compiled:{program_name}", description=description)

    test: dict[str, Any] | None = None
    test_calls = 0
    if evaluate_test:
        test, test_calls = _test_score(
            data, proto, split, codes, client, program, lang, seed, progress, console, test_limit
        )

    meta = {
        "format_version": 1,
        "name": program_name,
        "description": description,
        "survey": data.name,
        "countries": codes,
        "model": model,
        "protocol": proto.value,
        "language": lang,
        "split": {"seed": split_seed, "test_fraction": test_fraction, "n_dev": len(split.dev),
                  "n_test": len(split.test)},
        "seed": seed,
        "budget": budget,
        "objective": objective,
        "dev_limit": dev_limit,
        "test_limit": test_limit,
        "search_space": space.to_dict(),
        "config": winner.candidate.config() | {"parts": winner.candidate.parts},
        "chosen": winner.candidate.label,
        "chosen_origin": winner.candidate.origin,
        "selection": selection,
        "dev_score": {
            "search": winner.search.as_dict() if winner.search else None,
            "validation": winner.validation.as_dict() if winner.validation else None,
            "questions": {c: {"search": len(search.search_items[c]), "validation": len(search.val_items[c])}
                          for c in codes},
        },
        "baseline": {
            "label": default.label,
            "search": finalists[0].search.as_dict() if finalists[0].search else None,
            "validation": finalists[0].validation.as_dict() if finalists[0].validation else None,
        },
        "finalists": [
            {"label": r.candidate.label, "origin": r.candidate.origin, "note": r.candidate.note or r.note,
             "search": _short(r.search), "validation": _short(r.validation), "config": r.candidate.config()}
            for r in finalists
        ],
        "test_score": test,
        "calls_spent": search_calls,
        "planned_calls": evaluator.planned,
        "test_calls": test_calls,
        "generation_calls": search.generation_calls,
        "search_seconds": round(search_s, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "notes": search.notes,
        "learned_selection": learned_report,
        "search_log": search.log,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "selfalign_version": __version__,
    }  # fmt: skip
    path = save_compiled(program, meta, target) if save else None
    return OptimizeResult(program_name, program, meta, path)


def _choose(search: Search, finalists: list[Scored]) -> tuple[Scored, dict[str, Any]]:
    """The validated finalist with the best objective, if it beats the paper default convincingly (SWITCH_P)."""
    from selfalign.metrics import paired_difference

    default = finalists[0]
    validated = [r for r in finalists if r.validation is not None]
    if not validated:
        return default, {"rule": "no finalist was validated; the paper default is kept"}
    best = by_score(validated, "validation")[0]
    rule = f"best validation objective; replaces the paper default only if paired p < {SWITCH_P}"
    if best is default or default.validation is None:
        return best, {"rule": rule, "best_on_validation": best.candidate.label}
    items = search.items("validation")
    ours = search.ev.run(best.candidate.key, best.candidate.build(), items)
    base = search.ev.run(default.candidate.key, default.candidate.build(), items)
    js = search.ev.objective == "js"

    def main_metric(outcomes: list[Any]) -> list[float]:  # agreement in pp, JS similarity as it is
        return [o.js if js else 100 * o.agreement for o in outcomes]

    result = paired_difference(main_metric(ours), main_metric(base), [i.question_id for i in items])
    record = {
        "rule": rule,
        "best_on_validation": best.candidate.label,
        "objective": search.ev.objective,
        ("diff_vs_default_js" if js else "diff_vs_default_pp"): round(result.mean_diff, 4 if js else 2),
        ("ci_js" if js else "ci_pp"): [round(result.ci_low, 4 if js else 2), round(result.ci_high, 4 if js else 2)],
        "p_value": round(result.p_value, 4),
    }
    if result.mean_diff > 0 and result.p_value < SWITCH_P:
        return best, record | {"switched": True}
    margin = f"JS similarity {result.mean_diff:+.3f}" if js else f"{result.mean_diff:+.1f} pp"
    search.notes.append(
        f"kept the paper default: the best finalist ({best.candidate.label}) was {margin} on validation "
        f"(p = {result.p_value:.2f}), not a convincing margin"
    )
    return default, record | {"switched": False}


def _short(score: Score | None) -> dict[str, Any] | None:
    if score is None:
        return None
    return {"agreement": round(score.agreement, 4), "js_similarity": round(score.js, 4), "n": score.n_items}


def _description(codes: Sequence[str], candidate: Candidate) -> str:
    if len(codes) == 1:
        who = codes[0]
    elif len(codes) <= 5:
        who = f"pooled over {', '.join(codes)}"
    else:
        who = f"pooled over {len(codes)} countries"
    return f"Compiled for {who}: {candidate.label}"


def _test_score(
    survey: Survey,
    protocol: Protocol,
    split: QuestionSplit,
    codes: Sequence[str],
    client: Any,
    program: AlignmentProgram,
    lang: str,
    seed: int,
    progress: bool,
    console: Any,
    limit: int | None = None,
) -> tuple[dict[str, Any], int]:
    """The compiled program on the test questions (demonstration pool = dev): called once, after the search."""
    before = int(getattr(getattr(client, "stats", None), "calls", 0))
    items = [Item(c, q) for c in codes for q in [q for q in split.test if survey.has_answers(c, q)][:limit]]
    bar = Progress(progress, console, len(items))
    bar.stage("test questions (after the search)")
    ev = Evaluator(survey, protocol, frozenset(split.dev), client, lang=lang, seed=seed, on_calls=bar.advance)
    with bar:
        outcomes = ev.run("compiled", program, items)
    score = aggregate(zip(items, outcomes, strict=True))
    calls = int(getattr(getattr(client, "stats", None), "calls", 0)) - before
    return score.as_dict(), calls
