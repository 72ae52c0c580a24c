"""DSPy examples of a survey and the project's metric, for ``dspy.Evaluate`` and DSPy's optimizers.

::

    import dspy
    from selfalign.models import dspy_lm
    from selfalign.programs import ProgramContext, SelfAlign, dev_pool, metric, survey_examples

    dspy.configure(lm=dspy_lm("selfalign/gemma-3-270m"))
    program = SelfAlign(strategy="chrf", k=3, context=ProgramContext.for_survey("wvs7", pool=dev_pool()))
    test = survey_examples(countries=["NGA", "JPN"], split="test")
    dspy.Evaluate(devset=test, metric=metric, num_threads=4)(program)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy

from selfalign import DEFAULT_SURVEY
from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.metrics import agreement, js_similarity
from selfalign.models.types import AnswerDistribution, dist_from_json
from selfalign.splits import split_questions
from selfalign.survey import Protocol, Survey

JS_TIE_WEIGHT = 1e-3
"""metric = agreement + JS_TIE_WEIGHT x JS similarity: agreement first, JS breaks ties (both in [0, 1], so any
agreement difference of one question in up to 1,000 outweighs every JS difference)."""

EXAMPLE_INPUTS: tuple[str, ...] = ("question_id", "country", "lang", "protocol")


def _survey(survey: str | Survey) -> Survey:
    if isinstance(survey, Survey):
        return survey
    from selfalign.loaders import load_survey

    return load_survey(survey)


def dev_pool(
    survey: str | Survey = DEFAULT_SURVEY,
    *,
    protocol: str = "binary",
    split_seed: int = 0,
    test_fraction: float = 0.3,
) -> frozenset[str]:
    """The dev questions of the seeded split: the demonstration pool when test questions are evaluated."""
    split = split_questions(_survey(survey), protocol=protocol, seed=split_seed, test_fraction=test_fraction)
    return frozenset(split.dev)


def survey_examples(
    survey: str | Survey = DEFAULT_SURVEY,
    *,
    countries: Sequence[str] | None = None,
    split: str = "test",
    protocol: str = "binary",
    lang: str = "en",
    split_seed: int = 0,
    test_fraction: float = 0.3,
) -> list[dspy.Example]:
    """One ``dspy.Example`` per (country, question) of the split that the country answered.

    Inputs: ``question_id``, ``country``, ``lang``, ``protocol``. Labels: ``answer_code`` (the country's
    majority option, or side under the binary protocol), ``answer`` (its text in ``lang``) and ``shares`` (the
    country's answer shares in option order; binary: agree, disagree).
    """
    data = _survey(survey)
    proto = Protocol(protocol)
    questions = split_questions(data, protocol=proto.value, seed=split_seed, test_fraction=test_fraction).ids(split)
    lang = data.resolve_language(lang)
    out: list[dspy.Example] = []
    for country in [data.resolve_country(c) for c in (countries or data.countries)]:
        for qid in questions:
            if not data.has_answers(country, qid):
                continue
            question = data.question(qid)
            answers = data.distribution(country, qid)
            if proto is Protocol.BINARY:
                assert question.binary is not None
                shares = list(answers.side_shares(question.binary))
                code = "agree" if shares[0] >= shares[1] else "disagree"
                answer = data.side_labels(lang)[0 if code == "agree" else 1]
            else:
                shares = answers.vector(question.option_codes)
                code = answers.majority_option
                answer = question.option_labels(lang)[question.option_codes.index(code)]
            out.append(
                dspy.Example(
                    question_id=qid, country=country, lang=lang, protocol=proto.value,
                    answer_code=code, answer=answer, shares=shares,
                ).with_inputs(*EXAMPLE_INPUTS)
            )  # fmt: skip
    return out


def _distribution(prediction: Any) -> AnswerDistribution | None:
    data = getattr(prediction, "distribution", None)
    if data is None and hasattr(prediction, "get"):
        data = prediction.get("distribution")
    if isinstance(data, dict):
        return dist_from_json(data)
    return data if isinstance(data, AnswerDistribution) else None


def _scored(example: Any, prediction: Any) -> tuple[float, float] | None:
    """(agreement, JS similarity) of the prediction against the example's shares; None for a failed probe."""
    shares = example.get("shares") if hasattr(example, "get") else None
    if shares is None:
        raise SelfAlignError("the example has no shares: build examples with selfalign.programs.survey_examples()")
    dist = _distribution(prediction)
    if dist is None or not dist.ok or len(dist.probs) != len(shares):
        return None
    total = sum(shares)
    target = [s / total for s in shares]
    return agreement(dist.probs, target), js_similarity(dist.probs, target)


OBJECTIVES: tuple[str, ...] = ("agreement", "js")
"""What a search maximizes: ``agreement`` with the country's majority (JS similarity breaks ties) or ``js``,
the JS similarity of the answer distribution to the country's (1 - JS distance; agreement breaks ties)."""


def objective_value(agreement_: float, js: float, objective: str = "agreement") -> float:
    """One score of :data:`OBJECTIVES`: the main metric plus ``JS_TIE_WEIGHT`` x the other (both in [0, 1])."""
    if objective == "js":
        return js + JS_TIE_WEIGHT * agreement_
    if objective == "agreement":
        return agreement_ + JS_TIE_WEIGHT * js
    raise UnknownChoiceError("objective", objective, OBJECTIVES)


def _objective(example: Any, prediction: Any, trace: Any, objective: str) -> float | bool:
    scored = _scored(example, prediction)
    if scored is None:
        return False if trace is not None else 0.0
    agree, js = scored
    if trace is not None:  # DSPy's bootstrapping keeps the demonstrations the model got right
        return agree >= 1.0
    return objective_value(agree, js, objective)


def metric(example: Any, prediction: Any, trace: Any = None) -> float | bool:
    """The project's objective for one example: agreement with the country's majority plus JS_TIE_WEIGHT x JS
    similarity of the distributions (0 for a failed probe). With a ``trace`` (DSPy's bootstrapping), whether
    the model's most likely answer is the country's majority."""
    return _objective(example, prediction, trace, "agreement")


def js_metric(example: Any, prediction: Any, trace: Any = None) -> float | bool:
    """The distribution objective for one example: JS similarity of the distributions (1 - JS distance) plus
    JS_TIE_WEIGHT x agreement (0 for a failed probe). With a ``trace``, whether the model's most likely
    answer is the country's majority (as :func:`metric`: bootstrapping keeps demonstrations it got right)."""
    return _objective(example, prediction, trace, "js")
