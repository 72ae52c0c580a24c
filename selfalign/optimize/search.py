"""The search behind ``selfalign optimize``: from a budget of model calls to a compiled program.

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
``dspy``
    DSPy's optimizers driven by the project's metric (see :mod:`selfalign.optimize.dspy_opt`).
``mipro``
    MIPROv2 instruction proposals (needs a generating LM; poor with the tiny embedded model; not default).

Finalists (the paper default, then the other candidates by search score) are scored on the validation
questions while the budget lasts. The best objective (agreement, JS similarity as tie-break) replaces the
paper default only when its paired advantage on validation has a sign-flip p-value below
:data:`SWITCH_P`; the decision and its numbers go to ``meta.json``. Budget shares are planned from counted
prompts (see :mod:`selfalign.optimize.evaluate`), so a run is reproducible with a warm or cold cache.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfalign import DEFAULT_MODEL, DEFAULT_SURVEY, __version__
from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.optimize.evaluate import BudgetExceeded, Evaluator, Item, Score, aggregate
from selfalign.optimize.space import Candidate, SearchSpace, demonstrations_candidate, describe, paper_default
from selfalign.optimize.store import check_name, default_save_dir, save_compiled
from selfalign.programs import AlignmentProgram
from selfalign.retrieval import stable_seed
from selfalign.splits import QuestionSplit, split_questions
from selfalign.survey import Protocol, Survey

DEFAULT_BUDGET = 700
"""Planned model calls of a default run (8.5-9.3 min measured for EGY on 2 busy CPU cores, embedded model)."""
MIN_DEV_QUESTIONS = 10
FINAL_SHARE = 0.3
STAGE_WEIGHTS: dict[str, float] = {"config": 1.3, "ranking": 0.7, "dspy": 0.6, "mipro": 0.6}
SWITCH_P = 0.1
"""The best finalist replaces the paper default only when it beats it on the validation questions with a
paired sign-flip p-value below this (agreement, clustered by question): the search compares several
finalists on the same ~75 validation questions, and smaller margins are mostly noise."""
USEFULNESS_PRIOR = 2.0
MIN_ROUND_QUESTIONS = 16


@dataclass
class OptimizeResult:
    """What :func:`optimize` returns: the compiled program, its metadata and where it was saved."""

    name: str
    program: AlignmentProgram
    meta: dict[str, Any]
    path: Path | None


@dataclass
class Scored:
    """A candidate with its scores on search and validation questions."""

    candidate: Candidate
    search: Score | None = None
    validation: Score | None = None
    note: str = ""


def _objective(score: Score | None) -> float:
    if score is None or math.isnan(score.objective):
        return -math.inf
    return score.objective


def _by_score(rows: Sequence[Scored], attr: str = "search") -> list[Scored]:
    """Best first; ties keep the given order (stable sort)."""
    return sorted(rows, key=lambda r: -_objective(getattr(r, attr)))


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


def _interleave_by_topic(ids: Sequence[str], survey: Survey, seed: int, salt: str) -> list[str]:
    """``ids`` shuffled within each topic (seeded per question id) and dealt out one topic at a time."""
    topics: dict[str, list[str]] = {}
    for qid in ids:
        topics.setdefault(survey.questions_by_id[qid].topic, []).append(qid)
    queues = [sorted(q, key=lambda x: stable_seed(salt, seed, x)) for q in topics.values()]
    out: list[str] = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def dev_halves(split: QuestionSplit, survey: Survey, seed: int) -> tuple[list[str], list[str]]:
    """Dev questions into (search, validation), alternating within each topic in a seeded order."""
    search: list[str] = []
    validation: list[str] = []
    topics: dict[str, list[str]] = {}
    for qid in split.dev:
        topics.setdefault(survey.questions_by_id[qid].topic, []).append(qid)
    for qids in topics.values():
        for i, qid in enumerate(sorted(qids, key=lambda x: stable_seed("optimize-halves", seed, x))):
            (search if i % 2 == 0 else validation).append(qid)
    return search, validation


class _Progress:
    """A rich progress bar of planned calls (or nothing)."""

    def __init__(self, enabled: bool, console: Any, total: int) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("calls"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task("search", total=total)

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def stage(self, text: str, total: int | None = None) -> None:
        if self._progress is not None:
            kwargs: dict[str, Any] = {"description": text}
            if total is not None:
                kwargs |= {"total": total, "completed": 0}
            self._progress.update(self._task, **kwargs)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)


class _Search:
    """One optimization run's state (see the module docstring)."""

    def __init__(
        self,
        survey: Survey,
        countries: list[str],
        protocol: Protocol,
        split: QuestionSplit,
        evaluator: Evaluator,
        space: SearchSpace,
        seed: int,
        dev_limit: int | None,
        progress: _Progress,
        model: str = DEFAULT_MODEL,
    ) -> None:
        self.survey = survey
        self.countries = countries
        self.protocol = protocol
        self.split = split
        self.ev = evaluator
        self.space = space
        self.seed = seed
        self.progress = progress
        self.model = model
        self.generation_calls = 0  # text generations by DSPy LMs (the mipro stage's instruction proposals)
        self.log: list[dict[str, Any]] = []
        self.notes: list[str] = []
        search_ids, val_ids = dev_halves(split, survey, seed)
        self.search_items: dict[str, list[Item]] = {}
        self.val_items: dict[str, list[Item]] = {}
        for country in countries:
            s = _interleave_by_topic([q for q in search_ids if survey.has_answers(country, q)], survey, seed, "s")
            v = _interleave_by_topic([q for q in val_ids if survey.has_answers(country, q)], survey, seed, "v")
            if dev_limit is not None:
                s, v = s[: (dev_limit + 1) // 2], v[: dev_limit // 2]
            n_dev = len(s) + len(v)
            if n_dev < MIN_DEV_QUESTIONS:
                raise SelfAlignError(
                    f"{survey.country_names[country]} ({country}) has only {n_dev} dev questions answered under "
                    f"the {protocol.value} protocol in {survey.name} (split seed {split.seed}); the search needs at "
                    f"least {MIN_DEV_QUESTIONS}"
                )
            self.search_items[country] = [Item(country, q) for q in s]
            self.val_items[country] = [Item(country, q) for q in v]
        self.universe = sorted(
            {q for c in countries for q in split.dev if survey.has_answers(c, q)},
            key=lambda q: self.split.dev.index(q),
        )

    # --- helpers -------------------------------------------------------------------------------------
    def items(self, which: str, per_country: int | None = None) -> list[Item]:
        """Search or validation items, the first ``per_country`` of each country."""
        table = self.search_items if which == "search" else self.val_items
        return [i for c in self.countries for i in table[c][:per_country]]

    def cost(self, candidate: Candidate, items: Sequence[Item]) -> int:
        return self.ev.cost(candidate.key, candidate.build(), items)

    def score(self, candidate: Candidate, items: Sequence[Item], stage: str, what: str = "search") -> Score:
        score = self.ev.evaluate(candidate.key, candidate.build(), items)
        self.log.append({
            "stage": stage, "candidate": candidate.label, "on": what, "questions": len(items),
            "agreement": round(score.agreement, 4) if not math.isnan(score.agreement) else None,
            "js_similarity": round(score.js, 4) if not math.isnan(score.js) else None,
        })  # fmt: skip
        return score

    def try_score(
        self, candidate: Candidate, items: Sequence[Item], stage: str, limit: int, what: str = "search"
    ) -> Score | None:
        """Score when the new prompts fit within ``limit`` planned calls (an absolute planned-call mark)."""
        if self.ev.planned + self.cost(candidate, items) > limit:
            return None
        try:
            return self.score(candidate, items, stage, what)
        except BudgetExceeded:
            return None

    # --- stage: config -------------------------------------------------------------------------------
    def _halving_plan(self, n: int) -> tuple[list[int], list[dict[str, int]]]:
        rounds = max(0, math.ceil(math.log2(n)) - 1) if n > 1 else 0
        sizes = [math.ceil(n / 2**r) for r in range(rounds + 1)]
        questions: list[dict[str, int]] = []
        for r in range(rounds + 1):
            per: dict[str, int] = {}
            for c in self.countries:
                total = len(self.search_items[c])
                q = math.ceil(total / 2 ** (rounds - r))
                per[c] = min(total, max(q, MIN_ROUND_QUESTIONS))
            questions.append(per)
        return sizes, questions

    def _halving_estimate(self, n: int) -> int:
        sizes, questions = self._halving_plan(n)
        total = 0
        previous = dict.fromkeys(self.countries, 0)
        for size, per in zip(sizes, questions, strict=True):
            total += size * sum(max(0, per[c] - previous[c]) for c in self.countries)
            previous = per
        return total

    def stage_config(self, allowance: int) -> list[Scored]:
        """Successive halving over sampled grid configurations (the paper default first)."""
        limit = self.ev.planned + allowance
        default = paper_default()
        others = [demonstrations_candidate(g) for g in self.space.grid()]
        others = [c for c in others if c.key != default.key]
        rng = np.random.default_rng(stable_seed("optimize-config", self.seed))
        pool = [default] + [others[i] for i in rng.permutation(len(others))]
        n = 1
        for size in (32, 24, 16, 12, 8, 6, 4, 3, 2):
            if size <= len(pool) and self._halving_estimate(size) <= allowance:
                n = size
                break
        sizes, questions = self._halving_plan(n)
        alive = [Scored(c) for c in pool[:n]]
        self.progress.stage(f"config search: {n} candidates")
        for size, per in zip(sizes, questions, strict=True):
            alive = alive[:size]
            items = [i for c in self.countries for i in self.search_items[c][: per[c]]]
            scored: list[Scored] = []
            for row in alive:
                score = self.try_score(row.candidate, items, "config", limit)
                if score is None:
                    self.notes.append(f"config search stopped at the budget share ({row.candidate.label})")
                    break
                row.search = score
                scored.append(row)
            if len(scored) < len(alive):  # the budget share ran out within the round: keep the last ranking
                break
            alive = _by_score(scored)
        full = sum(len(v) for v in self.search_items.values())
        return [r for r in alive if r.search is not None and r.search.n_items == full] or alive

    # --- stage: ranking ------------------------------------------------------------------------------
    def usefulness(self) -> dict[str, tuple[float, int]]:
        """Per dev question: (credited residual outcome / (count + prior), count), from search-item prompts."""
        search = {i for v in self.search_items.values() for i in v}
        records = [(item, o) for _, item, o in self.ev.outcomes(search) if o.ok and o.demonstrations]
        by_item: dict[Item, list[float]] = {}
        for item, o in records:
            by_item.setdefault(item, []).append(o.agreement + 1e-3 * o.js)
        means = {item: float(np.mean(v)) for item, v in by_item.items()}
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        for item, o in records:
            residual = o.agreement + 1e-3 * o.js - means[item]
            for qid in set(o.demonstrations):
                totals[qid] = totals.get(qid, 0.0) + residual
                counts[qid] = counts.get(qid, 0) + 1
        return {q: (totals[q] / (counts[q] + USEFULNESS_PRIOR), counts[q]) for q in totals}

    def ranking_by_usefulness(self, first: Sequence[str] = ()) -> list[str]:
        """``first``, then every dev question by usefulness (unseen ones at 0), ties in a seeded order."""
        useful = self.usefulness()
        rest = [q for q in self.universe if q not in set(first)]
        rest.sort(key=lambda q: (-useful.get(q, (0.0, 0))[0], stable_seed("optimize-tail", self.seed, q)))
        return [*first, *rest]

    def ranked(
        self,
        base: Candidate,
        ranking: Sequence[str],
        rerank: str | None = None,
        shortlist: int | None = None,
        label: str = "",
    ) -> Candidate:
        """A candidate showing the first k allowed questions of ``ranking`` with ``base``'s settings; with
        ``rerank``, the k most similar to the question among the first ``shortlist`` of the ranking."""
        demo = next((p for p in base.parts if p.get("part") in ("demonstrations", "ranked_demonstrations")), None)
        k = int(demo["k"]) if demo else 5
        form = demo["answer_form"] if demo else "majority"
        order = demo["order"] if demo else "similar_last"
        part = {
            "part": "ranked_demonstrations", "ranking": list(ranking), "k": k, "answer_form": form,
            "order": order, "rerank": rerank, "shortlist": shortlist or max(3 * k, 10),
        }  # fmt: skip
        parts = ([p for p in base.parts if p.get("part") == "persona"]) + [part]
        return Candidate(label=label or describe(parts), origin="ranking", parts=parts)

    def stage_ranking(self, allowance: int, base: Candidate) -> list[Scored]:
        """Learn a ranking of dev questions as demonstrations and propose programs built on it.

        1. exploration: random demonstration sets on a fixed batch of search questions (about 25% of the
           allowance), adding evidence about questions the config stage did not show;
        2. pruned similarity: the base config's similarity strategy (chrF++ unless it is BM25) restricted to
           the most useful half and three quarters of the dev questions (prompts whose similar
           demonstrations all survive the pruning are the base's own, so they cost nothing new);
        3. greedy forward selection of the first positions of a fixed set from a shortlist of the most
           useful questions (about 35%), then that ranking as a fixed set.
        """
        limit = self.ev.planned + allowance
        demo = next((p for p in base.parts if "k" in p), None)
        k = int(demo["k"]) if demo else 5
        countries = self.countries
        rng = np.random.default_rng(stable_seed("optimize-ranking", self.seed))
        out: list[Scored] = []
        # 1. exploration
        explore_items = [i for c in countries for i in self.search_items[c][:12]]
        explore_mark = self.ev.planned + int(0.2 * allowance)
        n_sets = max(0, min(48, int(0.2 * allowance) // max(1, len(explore_items))))
        self.progress.stage(f"ranking: {n_sets} random demonstration sets")
        for _ in range(n_sets):
            size = min(k, len(self.universe))
            chosen = [self.universe[i] for i in rng.choice(len(self.universe), size=size, replace=False)]
            candidate = self.ranked(base, self.ranking_by_usefulness(chosen), label="random set")
            if self.try_score(candidate, explore_items, "ranking/explore", min(limit, explore_mark)) is None:
                break
        # 2. pruned similarity
        items = self.items("search")
        strategy = demo.get("strategy") if demo and demo.get("strategy") in ("chrf", "bm25") else self.space.rerank
        ranking = self.ranking_by_usefulness()
        self.progress.stage(f"ranking: {strategy} within the most useful questions")
        for fraction in (0.8, 0.6):
            keep = max(k, math.ceil(fraction * len(ranking)))
            candidate = self.ranked(base, ranking, strategy, keep)
            persona = "persona + " if base.persona else ""
            settings = f"k={k} {candidate.parts[-1]['answer_form']} {candidate.parts[-1]['order']}"
            candidate.label = f"{persona}{strategy} {settings} within the learned top {keep}/{len(ranking)}"
            candidate.note = "similarity re-ranking within a learned shortlist"
            score = self.try_score(candidate, items, "ranking/pruned", limit - int(0.35 * allowance))
            if score is None:
                self.notes.append(f"ranking: {candidate.label} not scored (budget)")
            out.append(Scored(candidate, score))
        # 3. greedy forward selection of a fixed set
        greedy_items = [i for c in countries for i in self.search_items[c][:16]]
        steps = min(k, 3)
        greedy_mark = self.ev.planned + int(0.35 * allowance)
        shortlist_size = max(0, min(12, int(0.35 * allowance) // max(1, steps * len(greedy_items))))
        useful = self.usefulness()
        shortlist = [q for q in self.ranking_by_usefulness() if useful.get(q, (0.0, 0))[1] > 0][:shortlist_size]
        if len(shortlist) < 4:
            self.notes.append("ranking: no greedy selection of a fixed set (budget share too small for 4 candidates)")
            return out
        chosen: list[str] = []
        self.progress.stage(f"ranking: greedy selection from {len(shortlist)} questions")
        for step in range(steps):
            best: tuple[float, str] | None = None
            for qid in shortlist:
                if qid in chosen:
                    continue
                candidate = self.ranked(
                    base, self.ranking_by_usefulness([*chosen, qid]), label=f"greedy step {step + 1}"
                )
                score = self.try_score(candidate, greedy_items, "ranking/greedy", min(limit, greedy_mark))
                if score is None:
                    break
                if best is None or _objective(score) > best[0]:
                    best = (_objective(score), qid)
            if best is None:
                break
            chosen.append(best[1])
        self.progress.stage("ranking: scoring the learned fixed set")
        candidate = self.ranked(base, self.ranking_by_usefulness(chosen))
        candidate.note = f"greedy first {len(chosen)}: {', '.join(chosen)}"
        score = self.try_score(candidate, items, "ranking", limit)
        if score is None:
            self.notes.append(f"ranking: {candidate.label} not scored on all search questions (budget)")
        out.append(Scored(candidate, score))
        return out

    # --- finalists -----------------------------------------------------------------------------------
    def validate(self, finalists: list[Scored], limit: int) -> list[Scored]:
        items = self.items("validation")
        self.progress.stage(f"validation: {len(finalists)} finalists")
        for row in finalists:
            row.validation = self.try_score(row.candidate, items, "validation", limit, what="validation")
            if row.validation is None:
                row.note = "not validated (budget)"
        return finalists


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
    dev_limit: int | None = None,
    evaluate_test: bool = True,
    test_limit: int | None = None,
    progress: bool = False,
    console: Any = None,
    dspy_options: dict[str, Any] | None = None,
) -> OptimizeResult:
    """Search how demonstrations are chosen for ``countries`` on dev questions and compile the best program.

    ``countries``: one code (or a list: candidates are scored averaged over them; a pooled program). The
    budget caps planned model calls of the search (see :mod:`selfalign.optimize.evaluate`); the final test
    evaluation (after the search, ``evaluate_test``) is extra and reported separately. ``out`` is the parent
    folder to save into (default: ``programs/compiled`` or the user's folder); ``dev_limit`` caps the dev
    questions used per country (quick runs and tests) and ``test_limit`` the test questions scored per
    country (tests only: the test score is then partial, as meta.json says). Raises
    :class:`SelfAlignError` before any model call when the budget cannot evaluate even one candidate or a
    country has too few dev questions.
    """
    started = time.monotonic()
    space = space or SearchSpace()
    data = _resolve_survey(survey)
    codes = [countries] if isinstance(countries, str) else list(countries)
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
        from selfalign.models import ModelClient, open_cache

        client = ModelClient(model, cache=open_cache(cache_dir) if cache_dir is not None else None)
    calls_before = int(getattr(getattr(client, "stats", None), "calls", 0))

    if console is None and progress:
        from rich.console import Console

        console = Console(stderr=True)
    bar = _Progress(progress, console, budget)
    evaluator = Evaluator(data, proto, pool, client, budget=budget, lang=lang, seed=seed, on_calls=bar.advance)
    search = _Search(data, codes, proto, split, evaluator, space, seed, dev_limit, bar, model)

    default = paper_default()
    one = search.cost(default, search.items("search") + search.items("validation"))
    if one > budget:
        n_q = sum(len(v) for v in search.search_items.values()) + sum(len(v) for v in search.val_items.values())
        raise SelfAlignError(
            f"a budget of {budget} model calls cannot evaluate even one candidate: scoring one program on the "
            f"{n_q} dev questions of {', '.join(codes)} takes {one} calls; use --budget {one} or more "
            f"(default {DEFAULT_BUDGET})"
        )

    stages = [s for s in ("config", "ranking", "dspy", "mipro") if s in space.stages]
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
        best_config = next((r.candidate for r in _by_score(config_rows) if r.search is not None), default)
        if "ranking" in stages:
            start = evaluator.planned
            rows += search.stage_ranking(allowance["ranking"] + carry, best_config)
            carry = allowance["ranking"] + carry - (evaluator.planned - start)
        for stage in ("dspy", "mipro"):
            if stage in stages:
                from selfalign.optimize import dspy_opt

                start = evaluator.planned
                opts = {"cache_dir": cache_dir, **(dspy_options or {})}
                rows += dspy_opt.run_stage(stage, search, allowance[stage] + carry, best_config, opts)
                carry = allowance[stage] + carry - (evaluator.planned - start)

        finalists = [Scored(default)]
        seen = {default.key}
        for row in _by_score(rows):
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
        "search_log": search.log,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "selfalign_version": __version__,
    }  # fmt: skip
    path = save_compiled(program, meta, target) if save else None
    return OptimizeResult(program_name, program, meta, path)


def _choose(search: _Search, finalists: list[Scored]) -> tuple[Scored, dict[str, Any]]:
    """The validated finalist with the best objective, if it beats the paper default convincingly (SWITCH_P)."""
    from selfalign.metrics import paired_difference

    default = finalists[0]
    validated = [r for r in finalists if r.validation is not None]
    if not validated:
        return default, {"rule": "no finalist was validated; the paper default is kept"}
    best = _by_score(validated, "validation")[0]
    rule = f"best validation objective; replaces the paper default only if paired p < {SWITCH_P}"
    if best is default or default.validation is None:
        return best, {"rule": rule, "best_on_validation": best.candidate.label}
    items = search.items("validation")
    ours = search.ev.run(best.candidate.key, best.candidate.build(), items)
    base = search.ev.run(default.candidate.key, default.candidate.build(), items)
    result = paired_difference(
        [100 * o.agreement for o in ours], [100 * o.agreement for o in base], [i.question_id for i in items]
    )
    record = {
        "rule": rule,
        "best_on_validation": best.candidate.label,
        "diff_vs_default_pp": round(result.mean_diff, 2),
        "ci_pp": [round(result.ci_low, 2), round(result.ci_high, 2)],
        "p_value": round(result.p_value, 4),
    }
    if result.mean_diff > 0 and result.p_value < SWITCH_P:
        return best, record | {"switched": True}
    search.notes.append(
        f"kept the paper default: the best finalist ({best.candidate.label}) was {result.mean_diff:+.1f} pp on "
        f"validation (p = {result.p_value:.2f}), not a convincing margin"
    )
    return default, record | {"switched": False}


def _short(score: Score | None) -> dict[str, Any] | None:
    if score is None:
        return None
    return {"agreement": round(score.agreement, 4), "js_similarity": round(score.js, 4), "n": score.n_items}


def _description(codes: Sequence[str], candidate: Candidate) -> str:
    who = codes[0] if len(codes) == 1 else f"pooled over {', '.join(codes)}"
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
    bar = _Progress(progress, console, len(items))
    bar.stage("test questions (after the search)")
    ev = Evaluator(survey, protocol, frozenset(split.dev), client, lang=lang, seed=seed, on_calls=bar.advance)
    with bar:
        outcomes = ev.run("compiled", program, items)
    score = aggregate(zip(items, outcomes, strict=True))
    calls = int(getattr(getattr(client, "stats", None), "calls", 0)) - before
    return score.as_dict(), calls
