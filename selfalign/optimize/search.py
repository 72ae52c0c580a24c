"""The search behind ``selfalign optimize``: candidates scored on dev questions, stage by stage.

Data. Questions are split into dev and test (:func:`selfalign.splits.split_questions`); the search sees
dev questions only. Dev is halved, per topic, into *search* questions (where candidates are scored and
compared) and *validation* questions (where the finalists are compared once, to limit overfitting to the
search half). Demonstrations always come from the dev pool and never show the question being asked.

The stages (``config`` and ``ranking``; DSPy's in :mod:`selfalign.optimize.dspy_opt`) are methods of
:class:`Search`; :mod:`selfalign.optimize.compile` runs them within a budget and saves the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from selfalign import DEFAULT_MODEL
from selfalign.errors import SelfAlignError
from selfalign.optimize.evaluate import BudgetExceeded, Evaluator, Item, Score
from selfalign.optimize.progress import Progress
from selfalign.optimize.space import (
    Candidate,
    Scored,
    SearchSpace,
    by_score,
    demonstrations_candidate,
    describe,
    objective,
    paper_default,
)
from selfalign.retrieval import stable_seed
from selfalign.splits import QuestionSplit
from selfalign.survey import Protocol, Survey

MIN_DEV_QUESTIONS = 10
USEFULNESS_PRIOR = 2.0
MIN_ROUND_QUESTIONS = 16


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


class Search:
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
        progress: Progress,
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
        default = paper_default(self.space.exclude_battery)
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
            alive = by_score(scored)
        full = sum(len(v) for v in self.search_items.values())
        return [r for r in alive if r.search is not None and r.search.n_items == full] or alive

    # --- stage: ranking ------------------------------------------------------------------------------
    def usefulness(self) -> dict[str, tuple[float, int]]:
        """Per dev question: (credited residual outcome / (count + prior), count), from search-item prompts."""
        search = {i for v in self.search_items.values() for i in v}
        records = [(item, o) for _, item, o in self.ev.outcomes(search) if o.ok and o.demonstrations]
        by_item: dict[Item, list[float]] = {}
        for item, o in records:
            by_item.setdefault(item, []).append(o.value(self.ev.objective))
        means = {item: float(np.mean(v)) for item, v in by_item.items()}
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        for item, o in records:
            residual = o.value(self.ev.objective) - means[item]
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
                if best is None or objective(score) > best[0]:
                    best = (objective(score), qid)
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
