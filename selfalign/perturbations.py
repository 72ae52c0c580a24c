"""Perturbations of a probe's prompt: the order of the options, the answer words, the template.

A :class:`Perturbation` changes how a question is shown, never what it asks or how it is scored:

- ``option_order`` (:data:`OPTION_ORDERS`): ``surveyed`` (the survey's order, the default), ``reversed``,
  ``shift[:SEED]`` (a cyclic shift by 1 to n-1 places, drawn from the seed and the question) or
  ``shuffle[:SEED]`` (a permutation other than the survey's order, drawn from the seed and the question);
  the seed defaults to 0 and every country is shown the same order of a question. Ordinal scales keep their
  meaning: the model's probabilities are mapped back to option codes, and every metric works on codes in the
  survey's order, never on positions. With two options (the binary protocol) every order but ``surveyed``
  is the reversed one;
- ``answer_words`` (:data:`~selfalign.prompts.ANSWER_WORD_SETS`, binary protocol only): the survey's
  ``agree-disagree`` words, ``yes-no`` or ``true-false``, with the statement question that fits them;
- ``template`` (:data:`~selfalign.prompts.TEMPLATE_NAMES`): the scaffolding around question, options and answer.

Demonstrations are shown with the test question's perturbation: the same answer words and template, and the
same order *rule* applied to each demonstration's own options (a reversed test question comes after reversed
demonstrations; under ``shuffle:S`` each demonstration's options are in the order that question would have as
a test question under ``shuffle:S``). So a demonstration looks exactly as its question would look when tested
under the same perturbation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.prompts import (
    ANSWER_WORD_SETS,
    DEFAULT_ANSWER_WORDS,
    DEFAULT_TEMPLATE,
    TEMPLATE_NAMES,
    Item,
    answer_words,
    check_answer_words,
    check_template,
)
from selfalign.retrieval import format_distribution, stable_seed

SURVEYED = "surveyed"
OPTION_ORDERS: tuple[str, ...] = (SURVEYED, "reversed", "shift[:SEED]", "shuffle[:SEED]")
"""The option orders, as they are written (``shift`` and ``shuffle`` take an optional ``:SEED``, default 0)."""
_SEEDED = ("shift", "shuffle")

PERTURBATION_COLUMNS: tuple[str, ...] = ("option_order", "answer_words", "template")
"""The run-table columns that record a row's perturbation."""
DEFAULTS: dict[str, str] = {
    "option_order": SURVEYED,
    "answer_words": DEFAULT_ANSWER_WORDS,
    "template": DEFAULT_TEMPLATE,
}
"""The unperturbed value of each perturbation column (what rows of older runs, without the columns, had)."""
_AXES = {"order": "option_order", "words": "answer_words", "template": "template"}  # short name -> column


def check_option_order(value: str) -> str:
    """The canonical form of an option order (``"shift"`` -> ``"shift:0"``); an unknown one is an
    :class:`UnknownChoiceError` listing :data:`OPTION_ORDERS`."""
    text = str(value).strip()
    if text in (SURVEYED, "reversed"):
        return text
    name, sep, seed = text.partition(":")
    if name in _SEEDED:
        if not sep:
            return f"{name}:0"
        if seed.isdigit():
            return f"{name}:{int(seed)}"
        raise SelfAlignError(f"option order {text!r}: the seed after ':' must be a whole number >= 0")
    raise UnknownChoiceError("option order", text, OPTION_ORDERS, list_all=True)


def option_permutation(order: str, question_id: str, n: int) -> tuple[int, ...]:
    """The positions (in the survey's order) of the ``n`` options of ``question_id`` in the order shown."""
    order = check_option_order(order)
    identity = tuple(range(n))
    if order == SURVEYED or n < 2:
        return identity
    if order == "reversed":
        return identity[::-1]
    name, _, seed = order.partition(":")
    rng = np.random.default_rng(stable_seed("option-order", name, int(seed), question_id))
    if name == "shift":
        by = 1 + int(rng.integers(0, n - 1))
        return identity[by:] + identity[:by]
    while True:  # a shuffle that differs from the survey's order (with n >= 2 one is found quickly)
        drawn = tuple(int(i) for i in rng.permutation(n))
        if drawn != identity:
            return drawn


@dataclass(frozen=True)
class Perturbation:
    """How a probe is shown: option order, answer words (binary protocol) and template (see the module)."""

    option_order: str = SURVEYED
    answer_words: str = DEFAULT_ANSWER_WORDS
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        object.__setattr__(self, "option_order", check_option_order(self.option_order))
        check_answer_words(self.answer_words)
        check_template(self.template)

    @property
    def is_default(self) -> bool:
        """Whether this is the unperturbed prompt."""
        return self == UNPERTURBED

    @property
    def label(self) -> str:
        """A short name: ``"unperturbed"``, or the changed settings (``"order=reversed + words=yes-no"``)."""
        changed = [
            f"{short}={getattr(self, column)}"
            for short, column in _AXES.items()
            if getattr(self, column) != DEFAULTS[column]
        ]
        return " + ".join(changed) or "unperturbed"

    def permutation(self, question_id: str, n: int) -> tuple[int, ...]:
        """See :func:`option_permutation`."""
        return option_permutation(self.option_order, question_id, n)


UNPERTURBED = Perturbation()


PERTURBATION_NAMES: tuple[str, ...] = (
    "unperturbed",
    *(f"order={o}" for o in OPTION_ORDERS),
    *(f"words={w}" for w in ANSWER_WORD_SETS),
    *(f"template={t}" for t in TEMPLATE_NAMES),
)
"""How single perturbations are written (:func:`parse_perturbation`; ``+`` combines them)."""


def parse_perturbation(text: str) -> Perturbation:
    """A perturbation from its label: ``"unperturbed"``, ``"order=reversed"``, ``"words=yes-no"``,
    ``"template=interview"``, or several joined by ``+`` (``"order=shuffle:1+template=list"``)."""
    text = str(text).strip()
    if text in ("unperturbed", ""):
        return UNPERTURBED
    values: dict[str, str] = {}
    for part in text.split("+"):
        axis, sep, value = part.strip().partition("=")
        axis = axis.strip()
        if not sep or axis not in _AXES:
            raise UnknownChoiceError("perturbation", part.strip(), PERTURBATION_NAMES, list_all=True)
        values[_AXES[axis]] = value.strip()
    return Perturbation(**values)


def standard_perturbations(protocol: str) -> tuple[Perturbation, ...]:
    """The one-at-a-time set ``compare --robustness standard`` runs (the unperturbed prompt first): every
    other template and, for the binary protocol, the reversed order and every other answer-word set; for the
    options protocol, the reversed order, a cyclic shift and a shuffle."""
    orders = ("reversed",) if protocol == "binary" else ("reversed", "shift:0", "shuffle:0")
    words = ANSWER_WORD_SETS[1:] if protocol == "binary" else ()
    return (
        UNPERTURBED,
        *(Perturbation(option_order=o) for o in orders),
        *(Perturbation(answer_words=w) for w in words),
        *(Perturbation(template=t) for t in TEMPLATE_NAMES[1:]),
    )


# --- applying a perturbation ------------------------------------------------------------------------------------


def _words(item: Item, perturbation: Perturbation) -> tuple[str, ...]:
    """The item's option labels with the perturbation's answer words (by position: agree side first)."""
    if not item.binary:
        if perturbation.answer_words != DEFAULT_ANSWER_WORDS:
            raise SelfAlignError(
                f"answer words {perturbation.answer_words!r} apply to the binary protocol only "
                f"(use {DEFAULT_ANSWER_WORDS!r} with the options protocol)"
            )
        return item.options
    if len(item.options) != 2:
        return item.options
    positive, negative = item.options
    return answer_words(perturbation.answer_words, item.lang, (positive, negative))


def shown_item(
    item: Item, codes: Sequence[str], question_id: str, perturbation: Perturbation
) -> tuple[Item, tuple[str, ...]]:
    """The test question as shown under ``perturbation`` and its option codes in the order shown (``item``
    and ``codes`` in the survey's order; the unperturbed prompt returns them as they are)."""
    if perturbation.is_default:
        return item, tuple(codes)
    words = _words(item, perturbation)
    order = perturbation.permutation(question_id, len(words))
    return replace(item, options=tuple(words[i] for i in order)), tuple(codes[i] for i in order)


def shown_demonstration(
    item: Item,
    answer: str,
    question_id: str | None,
    perturbation: Perturbation,
    shares: Sequence[float] | None = None,
) -> tuple[Item, str]:
    """A demonstration (``item`` in the survey's order, ``answer`` one of its labels or, with ``shares`` in
    the survey's order, the distribution they give in words) as shown under ``perturbation``: the same words and
    order rule as a test question (a demonstration without a question id keeps its order). Other answers
    are shown as they are."""
    if perturbation.is_default:
        return item, answer
    words = _words(item, perturbation)
    order = perturbation.permutation(question_id, len(words)) if question_id else tuple(range(len(words)))
    shown = replace(item, options=tuple(words[i] for i in order))
    if answer in item.options:
        return shown, words[item.options.index(answer)]
    if shares is not None:  # a distribution answer (selfalign.retrieval.Demonstration.shares)
        return shown, format_distribution(shown.options, [shares[i] for i in order])
    return shown, answer
