"""The survey data model: questions with options and wordings per language, and countries' answer shares.

Every loader produces a :class:`Survey`; everything else in selfalign reads surveys through this module.
Objects are validated when built and immutable afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType
from typing import Literal

from selfalign.countries import match_country
from selfalign.errors import SelfAlignError, UnknownChoiceError

SHARE_TOLERANCE = 1e-6
Side = Literal["agree", "disagree"]


class ScaleKind(StrEnum):
    """Whether a question's options are ordered (a scale) or an unordered list."""

    ORDINAL = "ordinal"
    NOMINAL = "nominal"


class Protocol(StrEnum):
    """How a question is posed: the paper's two-sided statement, or the full list of survey options."""

    BINARY = "binary"
    OPTIONS = "options"


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Option:
    """One answer option: its survey code and its label in each language."""

    code: str
    labels: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))

    def label(self, lang: str = "en") -> str:
        """The label in ``lang``; raises :class:`UnknownChoiceError` listing the languages it has."""
        try:
            return self.labels[lang]
        except KeyError:
            raise UnknownChoiceError("language", lang, self.labels, hint="try `selfalign translate`") from None


@dataclass(frozen=True)
class BinarySplit:
    """The paper's binary protocol: a statement per language and the option codes on each side of it.

    Agreeing with the statement corresponds to ``agree_codes``; codes on neither side (a middle point,
    "hard to say") are left out when the country's majority side is computed.
    """

    statements: Mapping[str, str]
    agree_codes: tuple[str, ...]
    disagree_codes: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "statements", _frozen(self.statements))
        object.__setattr__(self, "agree_codes", tuple(self.agree_codes))
        object.__setattr__(self, "disagree_codes", tuple(self.disagree_codes))

    def statement(self, lang: str = "en") -> str:
        """The statement in ``lang``."""
        try:
            return self.statements[lang]
        except KeyError:
            raise UnknownChoiceError("language", lang, self.statements, hint="try `selfalign translate`") from None


@dataclass(frozen=True)
class Question:
    """A survey question: wording per language, ordered options, scale kind and optional binary split."""

    id: str
    topic: str
    scale: ScaleKind
    options: tuple[Option, ...]
    texts: Mapping[str, str]
    binary: BinarySplit | None = None
    binary_skip_reason: str | None = None
    battery: str | None = None
    probe: bool = True
    note: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", _frozen(self.texts))
        object.__setattr__(self, "options", tuple(self.options))
        codes = [o.code for o in self.options]
        if len(codes) < 2:
            raise SelfAlignError(f"question {self.id}: needs at least two options")
        if len(set(codes)) != len(codes):
            raise SelfAlignError(f"question {self.id}: duplicate option codes")
        if self.binary is not None:
            sides = set(self.binary.agree_codes) | set(self.binary.disagree_codes)
            if not sides <= set(codes):
                raise SelfAlignError(f"question {self.id}: binary split names codes {sorted(sides - set(codes))}")
            if set(self.binary.agree_codes) & set(self.binary.disagree_codes):
                raise SelfAlignError(f"question {self.id}: a code is on both binary sides")
            if not self.binary.agree_codes or not self.binary.disagree_codes:
                raise SelfAlignError(f"question {self.id}: each binary side needs at least one code")

    @cached_property
    def option_codes(self) -> tuple[str, ...]:
        """Option codes in survey order."""
        return tuple(o.code for o in self.options)

    @cached_property
    def option_code_set(self) -> frozenset[str]:
        """Option codes as a set, for fast membership tests."""
        return frozenset(self.option_codes)

    @property
    def languages(self) -> tuple[str, ...]:
        """Languages with a wording of this question."""
        return tuple(sorted(self.texts))

    def text(self, lang: str = "en") -> str:
        """The question's wording in ``lang``."""
        try:
            return self.texts[lang]
        except KeyError:
            raise UnknownChoiceError("language", lang, self.texts, hint="try `selfalign translate`") from None

    def option_labels(self, lang: str = "en") -> tuple[str, ...]:
        """Option labels in ``lang``, in survey order."""
        return tuple(o.label(lang) for o in self.options)

    def supports(self, protocol: Protocol | str) -> bool:
        """Whether the question can be posed under ``protocol``."""
        if not self.probe:
            return False
        return Protocol(protocol) is Protocol.OPTIONS or self.binary is not None


@dataclass(frozen=True)
class CountryAnswers:
    """One country's answer shares for one question (shares over substantive answers, summing to 1)."""

    country: str
    question_id: str
    shares: Mapping[str, float]
    n_respondents: int | None = None
    weighted: bool = True
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shares", _frozen(self.shares))
        total = 0.0
        for code, share in self.shares.items():
            if not isinstance(share, float | int) or math.isnan(share) or share < -SHARE_TOLERANCE:
                raise SelfAlignError(f"{self.country}/{self.question_id}: share of option {code} is {share!r}")
            total += share
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise SelfAlignError(f"{self.country}/{self.question_id}: shares sum to {total:.9f}, not 1")

    @property
    def majority_option(self) -> str:
        """Code of the option most respondents chose (the first in survey order on a tie)."""
        best = max(self.shares.values())
        return next(code for code, share in self.shares.items() if share == best)

    def share(self, code: str) -> float:
        """Share of respondents choosing option ``code`` (0 where nobody did)."""
        return float(self.shares.get(code, 0.0))

    def vector(self, codes: Sequence[str]) -> list[float]:
        """Shares in the order of ``codes``."""
        return [self.share(c) for c in codes]

    def side_shares(self, split: BinarySplit) -> tuple[float, float]:
        """Shares agreeing and disagreeing with a binary statement, renormalised over both sides."""
        agree = sum(self.share(c) for c in split.agree_codes)
        disagree = sum(self.share(c) for c in split.disagree_codes)
        total = agree + disagree
        if total <= 0:
            return (0.5, 0.5)
        return (agree / total, disagree / total)


@dataclass(frozen=True)
class LanguageInfo:
    """A language a survey is worded in, and how its wording was produced and checked."""

    code: str
    name: str
    agree: str
    disagree: str
    produced: str = ""
    checked: str = ""
    machine_translated: bool = False


@dataclass(frozen=True, eq=False)
class Survey:
    """An immutable survey: questions, countries and their answer shares.

    Build with :meth:`Survey.build` (validates) or one of the loaders in :mod:`selfalign.loaders`.
    """

    name: str
    questions_by_id: Mapping[str, Question]
    answers: Mapping[tuple[str, str], CountryAnswers]
    country_names: Mapping[str, str]
    languages_info: Mapping[str, LanguageInfo]
    metadata: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    native_languages: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def build(
        cls,
        name: str,
        questions: Iterable[Question],
        answers: Iterable[CountryAnswers],
        *,
        country_names: Mapping[str, str] | None = None,
        languages: Iterable[LanguageInfo] | None = None,
        metadata: Mapping[str, object] | None = None,
        native_languages: Mapping[str, str] | None = None,
    ) -> Survey:
        """Validate and assemble a survey. Raises :class:`SelfAlignError` naming the first problem."""
        by_id: dict[str, Question] = {}
        for q in questions:
            if q.id in by_id:
                raise SelfAlignError(f"survey {name}: duplicate question id {q.id}")
            by_id[q.id] = q
        if not by_id:
            raise SelfAlignError(f"survey {name}: no questions")
        table: dict[tuple[str, str], CountryAnswers] = {}
        for a in answers:
            q = by_id.get(a.question_id)
            if q is None:
                raise SelfAlignError(f"survey {name}: answers for unknown question {a.question_id}")
            unknown = set(a.shares) - q.option_code_set
            if unknown:
                raise SelfAlignError(
                    f"survey {name}: {a.country}/{a.question_id} has option codes {sorted(unknown)[:8]} "
                    f"not among the question's {len(q.option_codes)} options {list(q.option_codes)[:8]}"
                )
            key = (a.country, a.question_id)
            if key in table:
                raise SelfAlignError(f"survey {name}: duplicate answers for {a.country}/{a.question_id}")
            table[key] = a
        countries = sorted({c for c, _ in table})
        names = {c: (country_names or {}).get(c) or c for c in countries}
        langs: dict[str, LanguageInfo] = {}
        for info in languages or ():
            langs[info.code] = info
        if not langs:
            langs["en"] = LanguageInfo("en", "English", "agree", "disagree")
        for q in by_id.values():
            for lang in langs:
                if lang not in q.texts:
                    raise SelfAlignError(f"survey {name}: question {q.id} has no wording in language {lang!r}")
        return cls(
            name=name,
            questions_by_id=_frozen(by_id),
            answers=_frozen(table),
            country_names=_frozen(names),
            languages_info=_frozen(langs),
            metadata=_frozen(metadata or {}),
            native_languages=_frozen(native_languages or {}),
        )

    # --- listing -------------------------------------------------------------------------------
    @property
    def countries(self) -> tuple[str, ...]:
        """Country codes with answers, sorted."""
        return tuple(sorted(self.country_names))

    @property
    def questions(self) -> tuple[Question, ...]:
        """All questions in survey order."""
        return tuple(self.questions_by_id.values())

    @property
    def topics(self) -> tuple[str, ...]:
        """Topics in order of first appearance."""
        return tuple(dict.fromkeys(q.topic for q in self.questions_by_id.values()))

    @property
    def languages(self) -> tuple[str, ...]:
        """Language codes every question is worded in."""
        return tuple(self.languages_info)

    def questions_of_topic(self, topic: str) -> tuple[Question, ...]:
        """Questions of one topic (name matched case-insensitively)."""
        resolved = self.resolve_topic(topic)
        return tuple(q for q in self.questions_by_id.values() if q.topic == resolved)

    def questions_for(self, protocol: Protocol | str, country: str | None = None) -> tuple[Question, ...]:
        """Questions that can be posed under ``protocol`` (and that ``country`` answered, if given)."""
        code = self.resolve_country(country) if country else None
        return tuple(
            q
            for q in self.questions_by_id.values()
            if q.supports(protocol) and (code is None or (code, q.id) in self.answers)
        )

    # --- resolving names -------------------------------------------------------------------------
    def question(self, question_id: str) -> Question:
        """A question by id (case-insensitive)."""
        q = self.questions_by_id.get(question_id) or self.questions_by_id.get(str(question_id).upper())
        if q is None:
            raise UnknownChoiceError("question", question_id, self.questions_by_id)
        return q

    @cached_property
    def _country_lookup(self) -> dict[str, str]:
        """Lower-cased codes and names -> code."""
        lookup = {name.lower(): code for code, name in self.country_names.items()}
        lookup.update({code.lower(): code for code in self.country_names})
        return lookup

    def resolve_country(self, country: str) -> str:
        """A country code from a code or name, case-insensitive; names in any spelling coco knows.

        ``S. Korea``, ``South Korea`` and ``KOR`` all give ``KOR``. A sample variant is named by its code
        (``IND.current_national``) or its source name (``India (Current national sample)``); a plain
        ``India`` in a survey that has only India's samples (or a sample it lacks) is an error listing the
        codes it has for India.
        """
        text = " ".join(str(country).split())
        code = self._country_lookup.get(text.lower())
        if code:
            return code
        choices = [*self.country_names, *self.country_names.values()]
        match = match_country(text) if text else None
        if match is not None:
            if match.code in self.country_names:
                return match.code
            related = sorted(c for c in self.country_names if c.split(".", 1)[0] == match.iso3)
            if related:  # the country is there, but as other samples (or without the sample asked for)
                plain = match.name.split(" (", 1)[0] if match.sample else match.name
                hint = f"survey {self.name} has {plain} as {', '.join(related)}"
                raise UnknownChoiceError("country", country, related, hint=hint)
        raise UnknownChoiceError("country", country, choices, hint=f"survey {self.name}")

    def resolve_topic(self, topic: str) -> str:
        """A topic's exact name from a case-insensitive name or unique prefix."""
        topics = self.topics
        for t in topics:
            if t.lower() == topic.lower():
                return t
        prefixed = [t for t in topics if t.lower().startswith(topic.lower())]
        if len(prefixed) == 1:
            return prefixed[0]
        raise UnknownChoiceError("topic", topic, topics)

    def resolve_language(self, lang: str) -> str:
        """A language code the survey is worded in."""
        if lang in self.languages_info:
            return lang
        raise UnknownChoiceError(
            "language",
            lang,
            self.languages_info,
            hint=f"survey {self.name} has {', '.join(self.languages_info)}; add one with `selfalign translate`",
        )

    def native_language(self, country: str) -> str:
        """The country's main language if the survey has it, else English."""
        code = self.resolve_country(country)
        lang = self.native_languages.get(code)
        return lang if lang in self.languages_info else "en"

    # --- answers ----------------------------------------------------------------------------------
    def distribution(self, country: str, question_id: str) -> CountryAnswers:
        """A country's answer shares for a question."""
        code = self.resolve_country(country)
        q = self.question(question_id)
        try:
            return self.answers[(code, q.id)]
        except KeyError:
            raise SelfAlignError(
                f"{self.country_names[code]} ({code}) has no answers to {q.id} in {self.name}"
            ) from None

    def has_answers(self, country: str, question_id: str) -> bool:
        """Whether the country answered the question."""
        return (country, question_id) in self.answers

    def majority_option(self, country: str, question_id: str) -> str:
        """The option code most of the country's respondents chose."""
        return self.distribution(country, question_id).majority_option

    def majority_side(self, country: str, question_id: str) -> Side | None:
        """``"agree"`` or ``"disagree"``: the side of the binary statement most respondents took (None if no split)."""
        q = self.question(question_id)
        if q.binary is None:
            return None
        agree, disagree = self.distribution(country, question_id).side_shares(q.binary)
        return "agree" if agree >= disagree else "disagree"

    def side_labels(self, lang: str = "en") -> tuple[str, str]:
        """The words for agreeing and disagreeing in ``lang``."""
        info = self.languages_info[self.resolve_language(lang)]
        return (info.agree, info.disagree)

    def __repr__(self) -> str:
        return (
            f"Survey({self.name!r}: {len(self.questions_by_id)} questions, {len(self.country_names)} countries, "
            f"{len(self.topics)} topics, languages {list(self.languages)})"
        )
