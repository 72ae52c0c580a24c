"""Scoring candidate programs on dev questions inside a search, under a budget of model calls.

An :class:`Evaluator` renders a candidate's prompts for ``(country, question)`` items (demonstration pool =
the dev split), sends the prompts it has not seen before to the model in one batch through
:meth:`ModelClient.score_many` (and so through the cache), and scores each answer against the country's
shares with the project's metrics (agreement, JS similarity).

Budget accounting is *planned*: every distinct prompt the search asks for counts as one call, whether the
cache answers it or not. The search decides what to evaluate from these planned counts only, so the same
arguments give the same compiled program with a cold or a warm cache; the calls that actually reached the
model (``client.stats.calls``) are reported separately and never exceed the planned count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.metrics import agreement, js_similarity
from selfalign.models.types import AnswerDistribution, RenderedPrompt
from selfalign.programs import AlignmentProgram, Probe, ProgramContext
from selfalign.programs.examples import OBJECTIVES, objective_value
from selfalign.survey import Protocol, Survey


class BudgetExceeded(SelfAlignError):
    """An evaluation would need more model calls than the budget has left."""


@dataclass(frozen=True)
class Item:
    """One evaluation unit: a question posed as a country."""

    country: str
    question_id: str


@dataclass(frozen=True)
class Outcome:
    """What one candidate scored on one item (NaN metrics when the prompt or the call failed)."""

    agreement: float
    js: float
    demonstrations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether the item was scored."""
        return not math.isnan(self.agreement)

    def value(self, objective: str = "agreement") -> float:
        """The item's score under ``objective`` (see :data:`OBJECTIVES`)."""
        return objective_value(self.agreement, self.js, objective)


@dataclass
class Score:
    """A candidate's mean metrics over items: per country first, then averaged over countries."""

    agreement: float
    js: float
    n_items: int
    n_failed: int
    per_country: dict[str, dict[str, float]] = field(default_factory=dict)
    target: str = "agreement"

    @property
    def objective(self) -> float:
        """The mean score under the search's objective ``target`` (:data:`OBJECTIVES`; NaN when nothing was
        scored): agreement with JS similarity as the tie-break, or the reverse."""
        return objective_value(self.agreement, self.js, self.target)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (agreement in [0, 1])."""
        return {
            "agreement": _round(self.agreement),
            "js_similarity": _round(self.js),
            "n_items": self.n_items,
            "n_failed": self.n_failed,
            "per_country": {
                c: {k: _round(v) if isinstance(v, float) else v for k, v in d.items()}
                for c, d in self.per_country.items()
            },
        }


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def prompt_key(prompt: RenderedPrompt) -> tuple[Any, ...]:
    """What identifies a prompt for the model (transcript, continuations, chat messages, labels, options)."""
    messages = tuple(tuple(sorted(m.items())) for m in prompt.messages)
    return (prompt.text, prompt.continuations, messages, prompt.labels, prompt.options)


def aggregate(outcomes: Iterable[tuple[Item, Outcome]], target: str = "agreement") -> Score:
    """Per-country means of the scored items, then their mean over countries (equal weight per country);
    ``target`` is the objective the score is ranked by."""
    by_country: dict[str, list[Outcome]] = {}
    n_items = n_failed = 0
    for item, outcome in outcomes:
        n_items += 1
        if not outcome.ok:
            n_failed += 1
            continue
        by_country.setdefault(item.country, []).append(outcome)
    per_country: dict[str, dict[str, float]] = {}
    for country, rows in sorted(by_country.items()):
        per_country[country] = {
            "agreement": float(np.mean([o.agreement for o in rows])),
            "js_similarity": float(np.mean([o.js for o in rows])),
            "n": len(rows),
        }
    if not per_country:
        return Score(float("nan"), float("nan"), n_items, n_failed, per_country, target)
    return Score(
        float(np.mean([d["agreement"] for d in per_country.values()])),
        float(np.mean([d["js_similarity"] for d in per_country.values()])),
        n_items,
        n_failed,
        per_country,
        target,
    )


class Evaluator:
    """Scores programs on items with one model client, memoising prompts and outcomes, within a budget.

    ``budget`` caps the planned calls (distinct prompts asked for, see the module docstring); None means no
    cap (used for the final test evaluation, which happens after the search). ``on_calls(n)`` is told how
    many prompts were answered (for progress bars). ``objective`` (:data:`OBJECTIVES`) is what its scores are
    ranked by.
    """

    def __init__(
        self,
        survey: Survey,
        protocol: Protocol,
        pool: frozenset[str],
        client: Any,
        *,
        budget: int | None = None,
        lang: str = "en",
        seed: int = 0,
        on_calls: Callable[[int], None] | None = None,
        objective: str = "agreement",
    ) -> None:
        if objective not in OBJECTIVES:
            raise UnknownChoiceError("objective", objective, OBJECTIVES)
        self.objective = objective
        self.survey = survey
        self.protocol = protocol
        self.context = ProgramContext(survey, pool)
        self.client = client
        self.budget = budget
        self.lang = lang
        self.seed = seed
        self.on_calls = on_calls
        self.planned = 0
        self._answers: dict[tuple[Any, ...], AnswerDistribution] = {}
        self._outcomes: dict[tuple[str, Item], Outcome] = {}
        self._prompts: dict[tuple[str, Item], tuple[RenderedPrompt | None, tuple[str, ...]]] = {}

    # --- budget --------------------------------------------------------------------------------------
    @property
    def remaining(self) -> int | None:
        """Planned calls left (None: unlimited)."""
        return None if self.budget is None else self.budget - self.planned

    def _prepared(
        self, key: str, program: AlignmentProgram, item: Item
    ) -> tuple[RenderedPrompt | None, tuple[str, ...]]:
        found = self._prompts.get((key, item))
        if found is None:
            probe = Probe(item.question_id, item.country, lang=self.lang, protocol=self.protocol, seed=self.seed)
            try:
                prepared = program.prepare(probe, self.context)
            except SelfAlignError:  # e.g. fewer candidate demonstrations than k for this country
                found = (None, ())
            else:
                found = (prepared.prompt, tuple(d.question_id for d in prepared.demonstrations))
            self._prompts[(key, item)] = found
        return found

    def cost(self, key: str, program: AlignmentProgram, items: Sequence[Item]) -> int:
        """Planned calls that scoring ``program`` on ``items`` would add (new distinct prompts)."""
        return len(self._new_prompts(key, program, items))

    def _new_prompts(
        self, key: str, program: AlignmentProgram, items: Sequence[Item]
    ) -> dict[tuple[Any, ...], RenderedPrompt]:
        """The new distinct prompts, by prompt key, that scoring ``program`` on ``items`` would send."""
        todo: dict[tuple[Any, ...], RenderedPrompt] = {}
        for item in items:
            if (key, item) in self._outcomes:
                continue
            prompt, _ = self._prepared(key, program, item)
            if prompt is not None:
                pk = prompt_key(prompt)
                if pk not in self._answers:
                    todo.setdefault(pk, prompt)
        return todo

    # --- scoring -------------------------------------------------------------------------------------
    def shares(self, item: Item) -> list[float]:
        """The country's answer shares for the item's question, in the protocol's option order."""
        answers = self.survey.answers[(item.country, item.question_id)]
        question = self.survey.questions_by_id[item.question_id]
        if self.protocol is Protocol.BINARY:
            assert question.binary is not None
            return list(answers.side_shares(question.binary))
        return answers.vector(question.option_codes)

    def outcome(self, item: Item, dist: AnswerDistribution | None, demos: tuple[str, ...] = ()) -> Outcome:
        """Agreement and JS similarity of an answer on an item (NaN when there is no valid answer)."""
        if dist is None or not dist.ok:
            return Outcome(float("nan"), float("nan"), demos)
        shares = self.shares(item)
        total = sum(shares)
        if total <= 0:
            return Outcome(float("nan"), float("nan"), demos)
        shares = [s / total for s in shares]
        return Outcome(agreement(dist.probs, shares), js_similarity(dist.probs, shares), demos)

    def evaluate(self, key: str, program: AlignmentProgram, items: Sequence[Item]) -> Score:
        """Score ``program`` (identified by ``key``) on ``items``; raises :class:`BudgetExceeded` when the new
        prompts do not fit the remaining budget (nothing is sent then)."""
        self.run(key, program, items)
        return aggregate(((item, self._outcomes[(key, item)]) for item in items), self.objective)

    def run(self, key: str, program: AlignmentProgram, items: Sequence[Item]) -> list[Outcome]:
        """Outcomes of ``program`` on ``items`` (see :meth:`evaluate`)."""
        todo = self._new_prompts(key, program, items)
        if todo:
            self.score_prompts(list(todo.values()))
        out: list[Outcome] = []
        for item in items:
            outcome = self._outcomes.get((key, item))
            if outcome is None:
                prompt, demos = self._prepared(key, program, item)
                dist = self._answers.get(prompt_key(prompt)) if prompt is not None else None
                outcome = self.outcome(item, dist, demos)
                self._outcomes[(key, item)] = outcome
            out.append(outcome)
        return out

    def cost_of_prompts(self, prompts: Sequence[RenderedPrompt]) -> int:
        """Planned calls that answering ``prompts`` would add."""
        return len({prompt_key(p) for p in prompts} - self._answers.keys())

    def score_prompts(self, prompts: Sequence[RenderedPrompt]) -> list[AnswerDistribution]:
        """Answers to ``prompts``: memoised ones for free, new distinct ones sent in one batch (each counted as
        one planned call); raises :class:`BudgetExceeded`, sending nothing, when they do not fit the budget."""
        todo: dict[tuple[Any, ...], RenderedPrompt] = {}
        for prompt in prompts:
            pk = prompt_key(prompt)
            if pk not in self._answers:
                todo.setdefault(pk, prompt)
        if todo:
            if self.budget is not None and self.planned + len(todo) > self.budget:
                raise BudgetExceeded(
                    f"scoring needs {len(todo)} more model calls but only {self.budget - self.planned} are left"
                )
            self.planned += len(todo)
            keys = list(todo)

            def done(index: int, dist: AnswerDistribution) -> None:
                if self.on_calls is not None:
                    self.on_calls(1)

            results = self.client.score_many([todo[k] for k in keys], on_result=done)
            for pk, dist in zip(keys, results, strict=True):
                self._answers[pk] = dist
        return [self._answers[prompt_key(p)] for p in prompts]

    def outcomes(self, items: Iterable[Item] | None = None) -> list[tuple[str, Item, Outcome]]:
        """Every memoised ``(candidate key, item, outcome)``, optionally only for ``items``."""
        wanted = None if items is None else set(items)
        return [(k, i, o) for (k, i), o in self._outcomes.items() if wanted is None or i in wanted]
