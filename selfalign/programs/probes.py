"""What a program is asked (a :class:`Probe`), what it needs besides (a :class:`ProgramContext`), and what it
rendered (a :class:`PreparedProbe`)."""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from selfalign import DEFAULT_SURVEY
from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.models.types import RenderedPrompt
from selfalign.perturbations import SURVEYED, Perturbation
from selfalign.prompts import DEFAULT_ANSWER_WORDS, DEFAULT_TEMPLATE
from selfalign.retrieval import Demonstration, DemonstrationRetriever
from selfalign.survey import Protocol, Survey

PROBE_INPUTS: tuple[str, ...] = (
    "question_id",
    "country",
    "lang",
    "protocol",
    "demo_lang",
    "seed",
    "option_order",
    "answer_words",
    "template",
)
"""The keyword inputs of a program call (``question_id`` and ``country`` are required)."""


@dataclass(frozen=True)
class Probe:
    """One question posed as one country, in one language, under one protocol.

    ``lang`` is the language of the test question; ``demo_lang`` that of the demonstrations (default: the
    same). ``seed`` drives random demonstration choices. ``option_order``, ``answer_words`` and ``template``
    perturb how the question is shown (:mod:`selfalign.perturbations`; default: unperturbed).
    """

    question_id: str
    country: str
    lang: str = "en"
    protocol: Protocol = Protocol.BINARY
    demo_lang: str | None = None
    seed: int = 0
    option_order: str = SURVEYED
    answer_words: str = DEFAULT_ANSWER_WORDS
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        object.__setattr__(self, "option_order", self.perturbation.option_order)  # checked, canonical

    @property
    def perturbation(self) -> Perturbation:
        """How the question is shown (an unknown name is a one-line error listing the valid ones)."""
        return Perturbation(self.option_order, self.answer_words, self.template)

    @property
    def demonstration_language(self) -> str:
        """The language demonstrations are shown in."""
        return self.demo_lang or self.lang


def make_probe(probe: Probe | None = None, **inputs: Any) -> Probe:
    """A :class:`Probe` from a probe or from keyword inputs (``question_id``, ``country``, ``lang``,
    ``protocol``, ``demo_lang``, ``seed``); missing or unknown inputs give a one-line error."""
    given = {k: v for k, v in inputs.items() if v is not None}
    unknown = sorted(set(given) - set(PROBE_INPUTS))
    if unknown:
        raise SelfAlignError(f"unknown program input {unknown[0]!r}; a program takes {', '.join(PROBE_INPUTS)}")
    if probe is not None:
        if not isinstance(probe, Probe):
            raise SelfAlignError(f"a program is called with a Probe or with keyword inputs, not {type(probe).__name__}")
        return replace(probe, **{k: _coerce(k, v) for k, v in given.items()}) if given else probe
    missing = [k for k in ("question_id", "country") if not given.get(k)]
    if missing:
        raise SelfAlignError(
            f"a program call needs {' and '.join(missing)} (e.g. program(question_id='Q164', country='NGA'))"
        )
    return Probe(**{k: _coerce(k, v) for k, v in given.items()})


def _coerce(name: str, value: Any) -> Any:
    if name == "protocol":
        try:
            return Protocol(value)
        except ValueError:
            raise UnknownChoiceError("protocol", str(value), [p.value for p in Protocol]) from None
    if name == "seed":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SelfAlignError(f"seed must be a whole number, not {value!r}") from None
    return str(value)


@dataclass
class ProgramContext:
    """What programs need besides the probe: the survey, its retriever, and the demonstration pool.

    ``pool`` restricts demonstrations to these question ids (the runner passes the dev split, so that the
    answers of test questions are never shown); None allows every other question. A context is shared, never
    copied: DSPy's optimizers deep-copy programs, and every copy keeps the same survey and retriever indexes.
    """

    survey: Survey
    pool: frozenset[str] | None = None
    retriever: DemonstrationRetriever | None = None

    def __post_init__(self) -> None:
        if self.retriever is None:
            self.retriever = DemonstrationRetriever(self.survey)

    def __deepcopy__(self, memo: dict[int, Any]) -> ProgramContext:
        return self

    @classmethod
    def for_survey(cls, survey: str | Survey = DEFAULT_SURVEY, pool: Collection[str] | None = None) -> ProgramContext:
        """A context for a survey given by name, path or object (its retriever is shared with
        :func:`default_context` of the same survey, so similarity indexes are built once)."""
        base = default_context(survey) if not isinstance(survey, Survey) else cls(survey)
        if pool is None:
            return base
        return cls(base.survey, frozenset(pool), base.retriever)


_defaults: dict[str, ProgramContext] = {}
_defaults_lock = threading.Lock()


def default_context(survey: str | Survey = DEFAULT_SURVEY) -> ProgramContext:
    """The process's shared context for a survey name or folder (no pool), loaded on first use."""
    if isinstance(survey, Survey):
        return ProgramContext(survey)
    with _defaults_lock:
        context = _defaults.get(survey)
        if context is None:
            from selfalign.loaders import load_survey

            context = _defaults[survey] = ProgramContext(load_survey(survey))
        return context


@dataclass(frozen=True)
class PreparedProbe:
    """A probe rendered by a program: the prompt, the demonstrations shown and the codes of the options.

    ``demos`` are the predictor's demonstrations in prompt order (fixed ones first, then retrieved ones), as
    plain dicts with the shown ``question`` and ``answer`` (and ``question_id`` where known);
    ``demonstrations`` the retrieved ones with their similarity scores.
    """

    probe: Probe
    program: str
    prompt: RenderedPrompt
    option_codes: tuple[str, ...]  # survey option codes, or ("agree", "disagree") in the binary protocol
    demonstrations: tuple[Demonstration, ...]
    persona: bool
    demos: tuple[dict[str, Any], ...] = ()

    @property
    def demo_ids(self) -> tuple[str, ...]:
        """Question ids of the demonstrations shown, in prompt order (those without an id are left out)."""
        return tuple(str(d["question_id"]) for d in self.demos if d.get("question_id"))
