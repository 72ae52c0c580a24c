"""Learned demonstration selection: a DSPy optimizer that learns how to weigh the evidence about candidates.

:class:`LearnedSelection` is a ``dspy.teleprompt.Teleprompter``. ``compile(student, trainset=..., valset=...)``
takes an :class:`~selfalign.programs.AlignmentProgram` and examples from
:func:`selfalign.programs.survey_examples` (dev questions of any number of countries, pooled) and returns the
student with its demonstration part replaced by a :class:`~selfalign.programs.LearnedDemonstrationsPart`:
weights over :data:`selfalign.retrieval.FEATURES` (value-structure concordance and association, chrF++, BM25,
topic, battery, how clear the country's answer to the candidate is, whether it has the test question's options),
a k and an order. The same weights serve every country, including countries that were not in the trainset. Two
steps:

1. **Fit the weights without a model** on every trainset example. For each example the candidates'
   features are computed as the program would (leave-target-out value structure; demonstrations from the
   student's pool, never the example's own question), and the *copier* of :mod:`selfalign.references` (answer
   what the shown demonstrations answered) is scored on the chosen top k with the metric's formula
   (agreement + :data:`~selfalign.programs.JS_TIE_WEIGHT` x JS similarity, whatever the ``objective``: a
   copier's vote shares are not a model's distribution). The weights (in units of each
   feature's standard deviation over the trainset's candidates) start from the best single feature and
   move by coordinate ascent, one feature at a time, while the mean score improves by more than one
   example's worth.
2. **Tune on the model.** Candidate programs (the fitted weights at each k of ``ks``, each order of
   ``orders`` and each answer form of ``answer_forms``, and the single features ``concordance`` and
   ``association`` for reference) answer the valset examples (default: up to ``model_items`` trainset
   examples, dealt out over countries) by successive halving: all candidates on a quarter of them, the better
   half on half, the best two on all. Each answer is scored by ``metric`` (default: the objective's,
   :func:`selfalign.programs.metric` or :func:`selfalign.programs.js_metric`). The best mean score wins.

Model answers come in batches through the student's model client when the configured DSPy LM is selfalign's
(:func:`selfalign.models.dspy_lm`; or an :class:`~selfalign.optimize.evaluate.Evaluator` given as
``evaluator``, whose budget then counts them), otherwise through ``dspy.Evaluate`` with any DSPy LM.
``max_calls`` caps the model calls of step 2 (distinct prompts asked for, cached or not).

Only trainset and valset answers are read, and demonstrations come from the student's pool (the trainset's
questions when the student has none), so fitting on dev questions never sees a test answer.
:attr:`LearnedSelection.report` (also ``compiled.selection_report``) records the fit and every model score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dspy
import numpy as np
from dspy.teleprompt import Teleprompter

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.metrics import agreement
from selfalign.models.types import AnswerDistribution
from selfalign.optimize.evaluate import OBJECTIVES, objective_value
from selfalign.optimize.search import dev_halves
from selfalign.optimize.space import Candidate, Scored, describe
from selfalign.programs import (
    AlignmentProgram,
    LearnedDemonstrationsPart,
    PersonaPart,
    Probe,
    ProgramContext,
    default_context,
    js_metric,
    survey_examples,
)
from selfalign.programs import metric as agreement_metric
from selfalign.references import Copy, copy_binary, copy_options, shown_answers
from selfalign.retrieval import ANSWER_FORMS, FEATURES, ORDERS, stable_seed
from selfalign.survey import Protocol, Survey

if TYPE_CHECKING:
    from selfalign.optimize.evaluate import Evaluator
    from selfalign.optimize.search import Search

__all__ = ["DEFAULT_KS", "STEPS", "LearnedSelection"]

_FollowKey = tuple[float, bool, float]
"""What the refit's follow rates depend on: the copier's vote share, whether the demonstration nearest the
question shows the copier's answer, and the share of shown demonstrations answered with the test question's
own options (which a model can copy word for word; always 1 under the binary protocol)."""

DEFAULT_KS: tuple[int, ...] = (3, 5, 8)
STEPS: tuple[float, ...] = (-1.0, -0.5, -0.25, 0.25, 0.5, 1.0)
"""Coordinate-ascent moves of one weight, in standard deviations of its feature."""
REFERENCE_FEATURES: tuple[str, ...] = ("concordance", "association")
"""Single features also tried on the model (at the middle k, most useful last), for reference."""


@dataclass
class _Item:
    """One trainset example's candidates for the model-free fit."""

    example: dspy.Example
    question_id: str
    country: str
    values: np.ndarray  # candidates x features
    shown: list[tuple[str, str | None]]  # per candidate (question id, code a demonstration shows)
    shares: list[float]


@dataclass
class _FitState:
    """What the model-free fit computed, kept for the refit on the model's following."""

    items: list[_Item]
    z: list[np.ndarray]  # per item: candidates x features, in standard deviations
    scale: np.ndarray
    usable: np.ndarray
    k: int
    survey: Survey
    protocol: Protocol


class LearnedSelection(Teleprompter):
    """Learns weights over :data:`~selfalign.retrieval.FEATURES` for choosing demonstrations (module docstring).

    ``ks``, ``orders`` and ``answer_forms``: the settings tried on the model (the fit copies what the first answer
    form shows); ``features``: those the fit may weigh;
    ``exclude_battery``: never show a question of the test question's battery (and do not weigh ``battery``);
    ``model_items``: how many trainset examples the model answers when no valset is given; ``max_calls``: the
    most model calls step 2 may plan (None: no cap); ``evaluator``: an
    :class:`~selfalign.optimize.evaluate.Evaluator` to batch, memoise and count the model's answers;
    ``objective``: ``agreement`` or ``js`` (:data:`~selfalign.optimize.evaluate.OBJECTIVES`), what the model's
    answers are scored by when no ``metric`` is given.
    """

    def __init__(
        self,
        metric: Callable[..., Any] | None = None,
        *,
        objective: str = "agreement",
        ks: Sequence[int] = DEFAULT_KS,
        orders: Sequence[str] = ORDERS,
        features: Sequence[str] = FEATURES,
        exclude_battery: bool = False,
        answer_forms: Sequence[str] = ("majority",),
        model_items: int = 400,
        max_calls: int | None = None,
        passes: int = 3,
        refit: bool = True,
        evaluator: Evaluator | None = None,
        num_threads: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise UnknownChoiceError("objective", objective, OBJECTIVES)
        self.objective = objective
        self.metric = metric if metric is not None else (js_metric if objective == "js" else agreement_metric)
        self.ks = tuple(int(k) for k in ks)
        if not self.ks or any(k < 1 for k in self.ks):
            raise SelfAlignError(f"learned selection: k values must be at least 1, got {list(ks)}")
        for order in orders:
            if order not in ORDERS:
                raise UnknownChoiceError("order", order, ORDERS)
        self.orders = tuple(orders) or ("similar_last",)
        for name in features:
            if name not in FEATURES:
                raise UnknownChoiceError("feature", name, FEATURES)
        self.features = tuple(f for f in FEATURES if f in features and not (exclude_battery and f == "battery"))
        if not self.features:
            raise SelfAlignError(f"learned selection needs at least one feature of {', '.join(FEATURES)}")
        self.exclude_battery = exclude_battery
        for form in answer_forms:
            if form not in ANSWER_FORMS:
                raise UnknownChoiceError("answer form", form, ANSWER_FORMS)
        self.answer_forms = tuple(answer_forms) or ("majority",)
        self.answer_form = self.answer_forms[0]  # the form the model-free fit copies
        self.model_items = int(model_items)
        self.max_calls = max_calls
        self.passes = int(passes)
        self.refit = bool(refit)
        self._state: _FitState | None = None
        self.refit_report: dict[str, Any] | None = None
        self.evaluator = evaluator
        self.num_threads = int(num_threads)
        self.seed = int(seed)
        self.report: dict[str, Any] = {}

    # --- compile -------------------------------------------------------------------------------------
    def compile(
        self,
        student: AlignmentProgram,
        *,
        trainset: list[dspy.Example],
        teacher: Any = None,
        valset: list[dspy.Example] | None = None,
        **kwargs: Any,
    ) -> AlignmentProgram:
        """The student with learned demonstration selection (see the module docstring)."""
        if not isinstance(student, AlignmentProgram):
            raise SelfAlignError(f"LearnedSelection compiles an AlignmentProgram, not {type(student).__name__}")
        if not trainset:
            raise SelfAlignError("LearnedSelection needs a trainset: selfalign.programs.survey_examples(split='dev')")
        context = student.context or default_context()
        protocol = _protocol_of(trainset)
        pool = context.pool if context.pool is not None else frozenset(ex.question_id for ex in trainset)
        outside = sorted({ex.question_id for ex in trainset} - set(pool))
        if outside:
            raise SelfAlignError(
                f"trainset question {outside[0]} is not in the student's demonstration pool; fit on the pool's "
                f"questions (dev) only, e.g. ProgramContext.for_survey(survey, pool=dev_pool())"
            )
        context = ProgramContext(context.survey, frozenset(pool), context.retriever)
        fit = self._fit(context, protocol, trainset)
        valset = list(valset) if valset is not None else _deal(trainset, self.model_items, self.seed)
        candidates = self._candidates(fit["weights"])
        scorer = _Scorer(self, context, protocol, student)
        results, best = self._halving(candidates, valset, scorer, student)
        chosen = candidates[best]
        compiled = _with_part(student, chosen, context)
        self.report = {
            "features": list(self.features),
            "exclude_battery": self.exclude_battery,
            "fit": fit,
            "model_stage": {
                "examples": len(valset),
                "countries": len({ex.country for ex in valset}),
                "planned_calls": scorer.planned,
                "refit": self.refit_report,
                "candidates": results,
                "chosen": _label(chosen),
            },
        }
        compiled.selection_report = self.report
        return compiled

    # --- step 1: the model-free fit ------------------------------------------------------------------
    def _items(self, context: ProgramContext, protocol: Protocol, trainset: list[dspy.Example]) -> list[_Item]:
        assert context.retriever is not None
        survey = context.survey
        columns = [FEATURES.index(f) for f in self.features]
        items: list[_Item] = []
        for ex in trainset:
            features = context.retriever.candidate_features(
                ex.question_id, ex.country, lang=ex.get("lang", "en"), protocol=protocol.value,
                answer_form=self.answer_form, pool=context.pool, exclude_battery=self.exclude_battery,
            )  # fmt: skip
            if len(features.ids) < max(self.ks):
                continue
            shown = shown_answers(survey, ex.country, protocol, features.ids, answer_form=self.answer_form)
            total = float(sum(ex.shares))
            shares = [float(s) / total for s in ex.shares] if total > 0 else list(ex.shares)
            items.append(_Item(ex, ex.question_id, ex.country, features.values[:, columns], shown, shares))
        if not items:
            raise SelfAlignError(f"no trainset example has the {max(self.ks)} candidate demonstrations k needs")
        return items

    def _fit(self, context: ProgramContext, protocol: Protocol, trainset: list[dspy.Example]) -> dict[str, Any]:
        items = self._items(context, protocol, trainset)
        stacked = np.concatenate([it.values for it in items])
        scale = stacked.std(axis=0)
        usable = scale > 1e-12
        z = [np.where(usable, it.values / np.where(usable, scale, 1.0), 0.0) for it in items]
        k = sorted(self.ks)[len(self.ks) // 2]
        self._state = _FitState(items, z, scale, usable, k, context.survey, protocol)
        copier = _Copier(context.survey, protocol, items, k)
        singles, start = self._singles(copier, z, usable)
        best_w, _, moves = self._ascend(copier, z, usable, start, len(items))
        weights = self._raw(best_w)
        final = copier.score([it.values for it in items], self._vector(weights))
        return {
            "examples": len(items),
            "countries": len({it.country for it in items}),
            "k": k,
            "objective": "copier: agreement + JS_TIE_WEIGHT x JS similarity of answering what the top k showed",
            "single_features": {self.features[f]: round(v, 6) for f, v in singles.items()},
            "start": {"weights": _named(self.features, start), "score": round(copier.score(z, start), 6)},
            "moves": moves,
            "weights": weights,
            "weights_in_sd": _named(self.features, best_w),
            "feature_sd": _named(self.features, scale),
            "score": round(final, 6),
        }

    def _singles(self, copier: _Copier, z: list[np.ndarray], usable: np.ndarray) -> tuple[dict[int, float], np.ndarray]:
        """Each usable feature alone (its positive-sign score), and the best single feature of either sign."""
        n = len(self.features)
        best_w, best = np.zeros(n), -math.inf
        singles: dict[int, float] = {}
        for f in range(n):
            if not usable[f]:
                continue
            for sign in (1.0, -1.0):
                w = np.zeros(n)
                w[f] = sign
                score = copier.score(z, w)
                if sign > 0:
                    singles[f] = score
                if score > best:
                    best_w, best = w, score
        return singles, best_w

    def _ascend(
        self, copier: _Copier, z: list[np.ndarray], usable: np.ndarray, start: np.ndarray, n_items: int
    ) -> tuple[np.ndarray, float, int]:
        """Coordinate ascent from ``start`` (weights in standard deviations): (weights, score, moves)."""
        best_w, best = start.copy(), copier.score(z, start)
        min_gain = 1.0 / n_items
        moves = 0
        for _ in range(self.passes):
            improved = False
            for f in range(len(self.features)):
                if not usable[f]:
                    continue
                for step in STEPS:
                    w = best_w.copy()
                    w[f] += step
                    if not np.any(w):
                        continue
                    score = copier.score(z, w)
                    if score > best + min_gain:
                        best_w, best, improved = w, score, True
                        moves += 1
            if not improved:
                break
        return best_w, best, moves

    def _raw(self, w: np.ndarray) -> dict[str, float]:
        """Weights in standard deviations -> weights on the features as they are (6 significant digits)."""
        state = self._state
        raw = np.where(state.usable, w / np.where(state.usable, state.scale, 1.0), 0.0)
        return {name: float(f"{x:.6g}") for name, x in zip(self.features, raw, strict=True) if x != 0.0}

    def _vector(self, weights: dict[str, float]) -> np.ndarray:
        return np.array([weights.get(f, 0.0) for f in self.features])

    def _refit(self, trace: list[tuple[dspy.Example, list[str], AnswerDistribution, str]], start: dict[str, float]):
        """Weights refitted to how the model follows what its demonstrations show (from the first round).

        Every answer of the first round is evidence: did the model answer what the copier would (the
        demonstrations' majority), given how strong that majority was, whether the demonstration nearest
        the question showed it, and how many demonstrations had the question's own options? These follow
        rates (smoothed towards the overall rate) turn the copier into an emulation of the model, and the
        weights are fitted again (coordinate ascent from the fitted weights and from each single feature) on
        that emulated score.
        """
        state = self._state
        counts: dict[_FollowKey, list[int]] = {}
        total = [0, 0]
        for ex, ids, dist, form in trace:
            if form != self.answer_form or not dist.ok or not ids:
                continue
            shown = shown_answers(state.survey, ex.country, state.protocol, ids, answer_form=form)
            copied, key = _copy_key(state.survey, state.protocol, ex.question_id, shown)
            if copied.choice is None:
                continue
            followed = int(dist.argmax == copied.codes.index(copied.choice))
            cell = counts.setdefault(key, [0, 0])
            cell[0] += followed
            cell[1] += 1
            total[0] += followed
            total[1] += 1
        if total[1] == 0:
            return None
        overall = total[0] / total[1]
        rates = {key: (hits + 2 * overall) / (n + 2) for key, (hits, n) in counts.items()}
        emulator = _Copier(state.survey, state.protocol, state.items, state.k, follow=(rates, overall))
        starts = [np.array([start.get(f, 0.0) for f in self.features]) * state.scale]
        _, single = self._singles(emulator, state.z, state.usable)
        starts.append(single)
        best: tuple[np.ndarray, float] | None = None
        for w0 in starts:
            w, score, _ = self._ascend(emulator, state.z, state.usable, w0, len(state.items))
            if best is None or score > best[1] + 1e-12:
                best = (w, score)
        assert best is not None
        weights = self._raw(best[0])
        return {
            "answers": total[1],
            "follow_rate": round(overall, 4),
            "follow_rates": [
                {
                    "vote_share": key[0],
                    "nearest_shows_it": key[1],
                    "same_options": key[2],
                    "answers": counts[key][1],
                    "rate": round(r, 4),
                }
                for key, r in sorted(rates.items())
            ],
            "emulated_score_fitted": round(emulator.score(state.z, starts[0]), 6),
            "emulated_score": round(best[1], 6),
            "weights": weights,
        }

    # --- step 2: the model ---------------------------------------------------------------------------
    def _grid(self, weights: dict[str, float], origin: str) -> list[dict[str, Any]]:
        """Candidates with ``weights`` at every answer form, k and order."""
        return [
            {"answer_form": form, "exclude_battery": self.exclude_battery, "weights": dict(weights), "k": k,
             "order": order, "origin": origin}
            for form in self.answer_forms
            for k in self.ks
            for order in self.orders
        ]  # fmt: skip

    def _candidates(self, weights: dict[str, float]) -> list[dict[str, Any]]:
        base = {"answer_form": self.answer_form, "exclude_battery": self.exclude_battery}
        out = self._grid(weights, "fitted")
        middle = sorted(self.ks)[len(self.ks) // 2]
        order = "similar_last" if "similar_last" in self.orders else self.orders[0]
        for name in REFERENCE_FEATURES:
            if name in self.features and {name: 1.0} != weights:
                out.append({**base, "weights": {name: 1.0}, "k": middle, "order": order, "origin": f"{name} only"})
        return out

    def _halving(
        self, candidates: list[dict[str, Any]], valset: list[dspy.Example], scorer: _Scorer, student: AlignmentProgram
    ) -> tuple[list[dict[str, Any]], int]:
        """Successive halving of ``candidates`` (extended after the first round by the refit's) on ``valset``."""
        scores: dict[int, tuple[float, int]] = {}
        results: dict[int, dict[str, Any]] = {i: {"label": _label(c), **c} for i, c in enumerate(candidates)}

        def run(i: int, items: list[dspy.Example], round_no: int) -> bool:
            program = _with_part(student, candidates[i], scorer.context)
            values = scorer.scores(program, items, candidates[i]["answer_form"])
            if values is None:  # the budget ran out
                return False
            scores[i] = (float(np.mean(values)), len(values))
            results[i][f"round_{round_no + 1}"] = {"score": round(scores[i][0], 6), "examples": len(values)}
            return True

        alive = list(range(len(candidates)))
        fractions = (0.25, 0.5, 1.0) if len(candidates) > 2 else (1.0,)
        self.refit_report = None
        for round_no, fraction in enumerate(fractions):
            if round_no == len(fractions) - 1:
                alive = alive[:2]
            items = valset[: max(1, math.ceil(fraction * len(valset)))]
            complete = True
            scored: list[int] = []
            for i in alive:
                if not run(i, items, round_no):
                    complete = False
                    break
                scored.append(i)
            if round_no == 0 and complete and self.refit:
                refit = self._refit(scorer.trace, candidates[0]["weights"])
                self.refit_report = refit
                known = [c["weights"] for c in candidates]
                if refit is not None and refit["weights"] and refit["weights"] not in known:
                    for candidate in self._grid(refit["weights"], "refitted to the model"):
                        candidates.append(candidate)
                        results[len(candidates) - 1] = {"label": _label(candidate), **candidate}
                        if not run(len(candidates) - 1, items, round_no):
                            complete = False
                            break
                        scored.append(len(candidates) - 1)
            if not scored:
                break
            alive = sorted(scored, key=lambda i: -scores[i][0])  # stable: ties keep the candidate order
            if not complete or len(alive) <= 1:
                break
            alive = alive[: max(2, math.ceil(len(alive) / 2))]
        if not scores:
            raise SelfAlignError("learned selection: the model budget cannot score even one candidate")
        most = max(n for _, n in scores.values())
        best = max((i for i in scores if scores[i][1] == most), key=lambda i: (scores[i][0], -i))
        return [results[i] for i in range(len(candidates))], best


class _Copier:
    """The copier's mean score (agreement + JS_TIE_WEIGHT x JS similarity) over the fit's items for weights
    ``w`` (memoised per chosen set), under either objective of the search: the copier's vote shares (k votes
    on at most k options) are not a distribution a model gives, so their JS similarity does not rank
    demonstrations for a model; the objective applies to the model's answers (step 2).

    With ``follow`` = (rates, overall) it emulates the model instead: the model answers the copier's choice
    with the follow rate of its :data:`_FollowKey` (else any other option), and the score is the expected
    agreement whatever the objective (the emulation follows answers, not distributions).
    """

    def __init__(
        self,
        survey: Survey,
        protocol: Protocol,
        items: list[_Item],
        k: int,
        follow: tuple[dict[_FollowKey, float], float] | None = None,
    ) -> None:
        self.survey = survey
        self.protocol = protocol
        self.items = items
        self.k = k
        self.follow = follow
        self._memo: dict[tuple[int, tuple[int, ...]], float] = {}

    def score(self, values: Sequence[np.ndarray], w: np.ndarray) -> float:
        total = 0.0
        for n, (item, x) in enumerate(zip(self.items, values, strict=True)):
            chosen = tuple(int(i) for i in np.argsort(-(x @ w), kind="stable")[: self.k][::-1])  # best shown last
            key = (n, chosen)
            value = self._memo.get(key)
            if value is None:
                value = self._value(item, [item.shown[i] for i in chosen])
                self._memo[key] = value
            total += value
        return total / len(self.items)

    def _value(self, item: _Item, shown: list[tuple[str, str | None]]) -> float:
        copied, key = _copy_key(self.survey, self.protocol, item.question_id, shown)
        if self.follow is None:
            agree, js = copied.score(item.shares)
            return objective_value(agree, js)
        hits = [agreement([1.0 if j == i else 0.0 for j in range(len(copied.codes))], item.shares)
                for i in range(len(copied.codes))]  # fmt: skip
        if copied.choice is None:
            return float(np.mean(hits))
        rates, overall = self.follow
        rate = rates.get(key, overall)
        chosen = copied.codes.index(copied.choice)
        others = [h for i, h in enumerate(hits) if i != chosen]
        return rate * hits[chosen] + (1 - rate) * float(np.mean(others))


def _copy_key(
    survey: Survey, protocol: Protocol, question_id: str, shown: list[tuple[str, str | None]]
) -> tuple[Copy, _FollowKey]:
    """The copier's answer to the shown demonstrations, and its :data:`_FollowKey`."""
    if protocol is Protocol.BINARY:
        copied = copy_binary([code for _, code in shown])
        nearest = copy_binary([shown[-1][1]]).choice if shown else None
        same = 1.0
    else:
        question = survey.question(question_id)
        copied = copy_options(survey, question, shown)
        nearest = copy_options(survey, question, shown[-1:]).choice if shown else None
        lang = survey.languages[0]
        labels = question.option_labels(lang)
        matching = sum(survey.question(qid).option_labels(lang) == labels for qid, _ in shown)
        same = matching / len(shown) if shown else 0.0
    share = round(max(copied.probs), 2) if copied.probs else 0.0
    return copied, (share, nearest is not None and nearest == copied.choice, round(same, 2))


class _Scorer:
    """The metric of a program's answers to examples: batched through an Evaluator, or ``dspy.Evaluate``."""

    def __init__(
        self, owner: LearnedSelection, context: ProgramContext, protocol: Protocol, student: AlignmentProgram
    ) -> None:
        from selfalign.optimize.evaluate import Evaluator

        self.owner = owner
        self.context = context
        self.protocol = protocol
        self.evaluator = owner.evaluator
        self.lm = None
        if self.evaluator is None:
            from selfalign.models.dspy_bridge import route_client
            from selfalign.programs import resolve_lm

            self.lm = resolve_lm(None)
            client = route_client(self.lm)
            if client is not None:
                self.evaluator = Evaluator(context.survey, protocol, frozenset(context.pool or ()), client)
        self.start = self.evaluator.planned if self.evaluator is not None else 0
        self.dspy_calls = 0
        self.trace: list[tuple[dspy.Example, list[str], AnswerDistribution, str]] = []

    @property
    def planned(self) -> int:
        """Model calls planned by step 2 so far."""
        if self.evaluator is None:
            return self.dspy_calls
        return self.evaluator.planned - self.start

    def _fits(self, n: int) -> bool:
        cap = self.owner.max_calls
        return cap is None or self.planned + n <= cap

    def scores(
        self, program: AlignmentProgram, examples: list[dspy.Example], form: str = "majority"
    ) -> list[float] | None:
        """The metric per example (0 where the prompt cannot be built), or None when over the budget; each
        answer is kept in :attr:`trace` with the demonstrations it was shown and the answer form."""
        from selfalign.optimize.evaluate import BudgetExceeded

        metric = self.owner.metric
        if self.evaluator is None:
            if not self._fits(len(examples)):
                return None
            program.context = self.context
            evaluate = dspy.Evaluate(
                devset=examples, metric=metric, num_threads=self.owner.num_threads, display_progress=False
            )
            with dspy.context(lm=self.lm):
                result = evaluate(program)
            self.dspy_calls += len(examples)
            for ex, prediction, _ in result.results:
                dist = getattr(prediction, "distribution", None)
                prepared = getattr(prediction, "prepared", None)
                if isinstance(dist, AnswerDistribution) and prepared is not None:
                    self.trace.append((ex, [d.question_id for d in prepared.demonstrations], dist, form))
            return [float(score) for _, _, score in result.results]
        prompts: list[Any] = []
        shown: list[list[str]] = []
        for ex in examples:
            probe = Probe(ex.question_id, ex.country, lang=ex.get("lang", "en"), protocol=self.protocol,
                          seed=self.owner.seed)  # fmt: skip
            try:
                prepared = program.prepare(probe, self.context)
            except SelfAlignError:
                prompts.append(None)
                shown.append([])
            else:
                prompts.append(prepared.prompt)
                shown.append([d.question_id for d in prepared.demonstrations])
        wanted = [p for p in prompts if p is not None]
        if not self._fits(self.evaluator.cost_of_prompts(wanted)):
            return None
        try:
            answers = iter(self.evaluator.score_prompts(wanted))
        except BudgetExceeded:
            return None
        out: list[float] = []
        for ex, prompt, ids in zip(examples, prompts, shown, strict=True):
            dist: AnswerDistribution | None = next(answers) if prompt is not None else None
            out.append(0.0 if dist is None else float(metric(ex, dspy.Prediction(distribution=dist))))
            if dist is not None:
                self.trace.append((ex, ids, dist, form))
        return out


def _protocol_of(examples: Sequence[dspy.Example]) -> Protocol:
    protocols = {str(ex.get("protocol", "binary")) for ex in examples}
    if len(protocols) != 1:
        raise SelfAlignError(f"the trainset mixes protocols {sorted(protocols)}; learn one selection per protocol")
    value = protocols.pop()
    try:
        return Protocol(value)
    except ValueError:
        raise UnknownChoiceError("protocol", value, [p.value for p in Protocol]) from None


def _deal(examples: Sequence[dspy.Example], n: int, seed: int) -> list[dspy.Example]:
    """Up to ``n`` examples, dealt out one country at a time (each country's in a seeded order)."""
    by_country: dict[str, list[dspy.Example]] = {}
    for ex in examples:
        by_country.setdefault(ex.country, []).append(ex)
    queues = [
        sorted(v, key=lambda ex: stable_seed("learned-valset", seed, ex.country, ex.question_id))
        for _, v in sorted(by_country.items())
    ]
    out: list[dspy.Example] = []
    while len(out) < n and any(queues):
        for queue in queues:
            if queue and len(out) < n:
                out.append(queue.pop(0))
    return out


def _named(names: Sequence[str], values: np.ndarray) -> dict[str, float]:
    return {name: round(float(v), 6) for name, v in zip(names, values, strict=True) if v != 0.0}


def _label(candidate: dict[str, Any]) -> str:
    weights = " ".join(f"{name}={w:+.3g}" for name, w in candidate["weights"].items())
    return f"learned ({weights}) k={candidate['k']} {candidate['answer_form']} {candidate['order']}"


def _with_part(student: AlignmentProgram, candidate: dict[str, Any], context: ProgramContext) -> AlignmentProgram:
    """The student with its demonstration parts replaced by the candidate's learned part."""
    part = LearnedDemonstrationsPart(
        weights=tuple(candidate["weights"].items()),
        k=int(candidate["k"]),
        answer_form=candidate["answer_form"],
        order=candidate["order"],
        exclude_battery=bool(candidate["exclude_battery"]),
    )
    parts = [p for p in student.parts if isinstance(p, PersonaPart)] + [part]
    program = AlignmentProgram(parts, name=student.program_name, description=student.description, context=context)
    program.answer.signature = student.answer.signature
    program.answer.demos = list(student.answer.demos)
    return program


def run_stage(search: Search, allowance: int, base: Candidate) -> tuple[list[Scored], dict[str, Any]]:
    """The ``learned`` stage of ``selfalign optimize``: :class:`LearnedSelection` on the search's data.

    The weights are fitted on every search question (the dev half the search compares candidates on) of every
    country of the search, the model answers the search items, and the search's evaluator counts the calls
    within ``allowance``. Under the options protocol the answer forms ``majority`` and ``distribution`` are
    both tried on the model. The validation questions stay unseen until the finalists are compared. Returns the
    chosen candidate (scored on the search items) and the optimizer's report.
    """
    search_ids, _ = dev_halves(search.split, search.survey, search.seed)
    wanted = set(search_ids)
    examples = survey_examples(
        search.survey, countries=search.countries, split="dev", protocol=search.protocol.value,
        lang=search.ev.lang, split_seed=search.split.seed, test_fraction=search.split.test_fraction,
    )  # fmt: skip
    trainset = [ex for ex in examples if ex.question_id in wanted]
    by_item = {(ex.country, ex.question_id): ex for ex in trainset}
    valset = [by_item[key] for key in ((i.country, i.question_id) for i in search.items("search")) if key in by_item]
    persona = [PersonaPart()] if base.persona else []
    student = AlignmentProgram(persona, name="learned-student", context=search.ev.context)
    # under the options protocol the shown distribution can teach the model a distribution (1 - JS), not only
    # the majority option; under binary the majority side is what the paper shows
    forms = ("majority", "distribution") if search.protocol is Protocol.OPTIONS else ("majority",)
    optimizer = LearnedSelection(
        exclude_battery=search.space.exclude_battery, answer_forms=forms, evaluator=search.ev,
        max_calls=allowance, seed=search.seed, objective=search.ev.objective,
    )  # fmt: skip
    search.progress.stage(f"learned: fitting weights on {len(trainset)} dev examples (no model)")
    try:
        compiled = optimizer.compile(student, trainset=trainset, valset=valset)
    except SelfAlignError as exc:
        search.notes.append(f"learned: no program ({exc})")
        return [], {"error": str(exc)}
    parts = [p.config() for p in compiled.parts]
    candidate = Candidate(label=describe(parts), origin="learned", parts=parts)
    weights = optimizer.report["fit"]["weights"]
    candidate.note = "fitted weights: " + ", ".join(f"{name}={w:+.3g}" for name, w in weights.items())
    score = search.try_score(candidate, search.items("search"), "learned", search.ev.planned + max(0, allowance))
    return [Scored(candidate, score)], optimizer.report
