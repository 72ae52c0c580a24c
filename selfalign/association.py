"""Value structure of a survey: how strongly two questions' answers move together across countries.

The ``correlation`` demonstration strategy (:mod:`selfalign.retrieval`) ranks candidate questions by their
association with the test question. Every question is summarised per country by one or more *features*:

- protocol ``binary``: the share agreeing with the question's binary statement
  (:meth:`~selfalign.survey.CountryAnswers.side_shares` with its :class:`~selfalign.survey.BinarySplit`);
- protocol ``options``, ordinal question: the expected relative position on its scale,
  ``sum_i share_i * i / (N - 1)`` for options ``i = 0 .. N-1`` in survey order (0 = first option, 1 = last);
- protocol ``options``, nominal question: each option's share, one feature per option.

The association of questions ``t`` and ``j`` is the largest Pearson correlation between a feature of ``t``
and a feature of ``j``, over the countries that answered both, leaving out the target country: the target
country's answers never enter its own ranking (not its answer to the test question, nor to the candidates).
For two ordinal questions (and always under ``binary``) that is the plain signed correlation: +1 when the
countries that agree more with one agree more with the other. A nominal question has no direction, and its
option shares sum to 1, so some option's share correlates positively with a feature of the other question
whenever any correlates at all; the maximum picks the option pair that moves together most.

Correlations are pairwise complete: a country that did not answer one of the two questions is left out of
that pair only. A pair needs :data:`MIN_COUNTRIES` countries besides the target with answers to both, and
some variation on both sides; otherwise its association is undefined (NaN).

Cost: the per-country features are built once per (survey, protocol). The association row of one (test
question, target country) is one small matrix product over the countries, with the target's weight set to
zero (its terms are then exact zeros: not a subtraction, so the target's answers cannot reach its ranking even
through rounding), and is cached.

*Concordance* (:class:`QuestionConcordance`, a feature of the learned selection) asks a different question of
the same data: how often copying question ``j``'s majority answer gives question ``t``'s majority answer, over
the countries other than the target. Unlike a correlation it sees base rates: two questions that nearly every
country agrees with are concordant though their shares need not correlate, and a country's "agree" on a
question most countries agree with predicts little about a test question most countries reject. Copying
follows :mod:`selfalign.references`: the majority side under ``binary``; under ``options``, for an ordinal
test question, the option nearest the relative position of the candidate's majority option on its own
(ordinal) scale, for a nominal one, the option with the same label when the candidate has the same option list.
A pair where copying is not defined (a nominal candidate for an ordinal test question, another option list
for a nominal one) or fewer than :data:`MIN_COUNTRIES` other countries answered both has NaN; otherwise the
value is ``(hits + 0.5) / (countries + 1)``, in (0, 1).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from selfalign.errors import SelfAlignError
from selfalign.survey import Protocol, ScaleKind, Survey

MIN_COUNTRIES = 10
"""Fewest countries besides the target that must have answered both questions for an association."""
_CACHE_CELLS = 8_000_000  # upper bound on the cached association values, to bound memory on very large surveys
_VARIANCE_FLOOR = 1e-12

__all__ = ["MIN_COUNTRIES", "QuestionAssociation", "QuestionConcordance", "check_countries"]


def check_countries(survey: Survey, what: str = "the correlation strategy needs") -> None:
    """Raise a one-line :class:`SelfAlignError` when ``survey`` has too few countries for associations."""
    n = len(survey.countries)
    if n < MIN_COUNTRIES + 1:
        raise SelfAlignError(
            f"survey {survey.name} has {n} {'country' if n == 1 else 'countries'}; {what} at least "
            f"{MIN_COUNTRIES + 1} (the target and {MIN_COUNTRIES} others to correlate answers across)"
        )


@dataclass(frozen=True)
class _Features:
    """Countries x features: values (0 where not answered), presence, and the features of each row."""

    countries: dict[str, int]
    present: np.ndarray  # float 0/1, countries x features
    values: np.ndarray
    squares: np.ndarray
    start: np.ndarray  # first feature of each row
    stop: np.ndarray  # one past its last feature (start == stop: no feature)


def _features(survey: Survey, protocol: Protocol, ids: Sequence[str]) -> _Features:
    countries = {c: i for i, c in enumerate(survey.countries)}
    columns: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    start = np.zeros(len(ids), dtype=np.int64)
    stop = np.zeros(len(ids), dtype=np.int64)
    n_features = 0
    for row, qid in enumerate(ids):
        question = survey.questions_by_id[qid]
        start[row] = n_features
        if question.supports(protocol):
            answered = [(countries[c], survey.answers[(c, qid)]) for c in countries if (c, qid) in survey.answers]
            if protocol is Protocol.BINARY:
                assert question.binary is not None
                split = question.binary
                per_feature = [[a.side_shares(split)[0] for _, a in answered]]
            elif question.scale is ScaleKind.ORDINAL:
                positions = np.linspace(0.0, 1.0, len(question.option_codes))
                per_feature = [[float(np.dot(a.vector(question.option_codes), positions)) for _, a in answered]]
            else:
                per_feature = [[a.share(code) for _, a in answered] for code in question.option_codes]
            where = np.array([i for i, _ in answered], dtype=np.int64)
            for values in per_feature:
                column = np.zeros(len(countries))
                mask = np.zeros(len(countries))
                column[where] = values
                mask[where] = 1.0
                columns.append(column)
                masks.append(mask)
            n_features += len(per_feature)
        stop[row] = n_features
    shape = (len(countries), n_features)
    values = np.column_stack(columns) if columns else np.zeros(shape)
    present = np.column_stack(masks) if masks else np.zeros(shape)
    for array in (values, present):
        array.setflags(write=False)
    squares = values * values
    squares.setflags(write=False)
    return _Features(countries, present, values, squares, start, stop)


class QuestionAssociation:
    """Leave-one-country-out associations between the questions ``ids`` of one survey under one protocol.

    ``ids`` are the rows (the retriever's questions with a text under the protocol); :meth:`row` returns one
    association per row. Thread-safe; built lazily and cached (see the module docstring for the cost).
    """

    def __init__(self, survey: Survey, protocol: Protocol, ids: Sequence[str]) -> None:
        check_countries(survey)
        self.survey = survey
        self.protocol = protocol
        self.ids = tuple(ids)
        self._position = {qid: i for i, qid in enumerate(self.ids)}
        self._features = _features(survey, protocol, self.ids)
        self._cache_rows = max(16, _CACHE_CELLS // max(1, len(self.ids)))
        self._rows: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()
        has = self._features.stop > self._features.start
        self._rows_with_features = np.flatnonzero(has)
        self._segment_starts = self._features.start[has]

    def answered_by_others(self, question_id: str, country: str) -> int:
        """How many countries other than ``country`` answered ``question_id`` (0 if it has no feature)."""
        row = self._position[question_id]
        f = self._features
        if f.stop[row] == f.start[row]:
            return 0
        column = f.present[:, int(f.start[row])]
        target = f.countries.get(country)
        return int(column.sum() - (column[target] if target is not None else 0.0))

    def row(self, question_id: str, country: str) -> np.ndarray:
        """The association of every row with ``question_id``, leaving out ``country``; NaN where undefined.

        Raises :class:`SelfAlignError` when fewer than :data:`MIN_COUNTRIES` other countries answered the
        question (no association with it can be defined).
        """
        row = self._position[question_id]
        others = self.answered_by_others(question_id, country)
        if others < MIN_COUNTRIES:
            raise SelfAlignError(
                f"question {question_id}: {others} countries besides {country} answered it; the correlation "
                f"strategy needs at least {MIN_COUNTRIES}"
            )
        target = self._features.countries.get(country)
        key = (row, -1 if target is None else target)
        cached = self._rows.get(key)
        if cached is not None:
            return cached
        out = self._compute(row, target)
        out.setflags(write=False)
        with self._lock:
            if len(self._rows) >= self._cache_rows:
                self._rows.clear()
            self._rows[key] = out
        return out

    def _compute(self, row: int, target: int | None) -> np.ndarray:
        f = self._features
        own = slice(int(f.start[row]), int(f.stop[row]))
        w = f.present[:, own].copy()  # countries x m: who answered the test question ...
        if target is not None:
            w[target] = 0.0  # ... other than the target: its terms are exact zeros, whatever it answered
        x = f.values[:, own]
        wx = w * x
        m = w.shape[1]
        on_present = np.concatenate([w, wx, wx * x], axis=1).T @ f.present  # 3m x F
        on_values = np.concatenate([w, wx], axis=1).T @ f.values  # 2m x F
        n, sx, sxx = on_present[:m], on_present[m : 2 * m], on_present[2 * m :]
        sy, sxy = on_values[:m], on_values[m:]
        syy = w.T @ f.squares
        with np.errstate(invalid="ignore", divide="ignore"):
            var_x = n * sxx - sx * sx
            var_y = n * syy - sy * sy
            floor = _VARIANCE_FLOOR * n * n
            defined = (n >= MIN_COUNTRIES) & (var_x > floor) & (var_y > floor)
            r = np.where(defined, (n * sxy - sx * sy) / np.sqrt(np.where(defined, var_x * var_y, 1.0)), np.nan)
        best_per_feature = np.fmax.reduce(r, axis=0)  # over the test question's features
        out = np.full(len(self.ids), np.nan)
        if len(self._rows_with_features):
            out[self._rows_with_features] = np.fmax.reduceat(best_per_feature, self._segment_starts)
        return np.clip(out, -1.0, 1.0)


@dataclass(frozen=True)
class _Majorities:
    """Countries x rows: the index of each country's majority answer (side 0 = agree, 1 = disagree under
    ``binary``; option index under ``options``), -1 where not answered."""

    countries: dict[str, int]
    index: np.ndarray  # int, countries x rows
    present: np.ndarray  # bool, countries x rows
    n_options: np.ndarray  # per row: 2 under binary, the number of options under options
    ordinal: np.ndarray  # per row: bool, an ordinal scale (options protocol)
    labels: np.ndarray  # per row: an id of the option label list (nominal copying needs the same list)


def _majorities(survey: Survey, protocol: Protocol, ids: Sequence[str]) -> _Majorities:
    countries = {c: i for i, c in enumerate(survey.countries)}
    index = np.full((len(countries), len(ids)), -1, dtype=np.int64)
    n_options = np.zeros(len(ids), dtype=np.int64)
    ordinal = np.zeros(len(ids), dtype=bool)
    label_ids: dict[tuple[str, ...], int] = {}
    labels = np.full(len(ids), -1, dtype=np.int64)
    lang = survey.languages[0] if survey.languages else "en"
    for row, qid in enumerate(ids):
        question = survey.questions_by_id[qid]
        if not question.supports(protocol):
            continue
        codes = question.option_codes
        n_options[row] = 2 if protocol is Protocol.BINARY else len(codes)
        ordinal[row] = protocol is Protocol.OPTIONS and question.scale is ScaleKind.ORDINAL
        labels[row] = label_ids.setdefault(question.option_labels(lang), len(label_ids))
        for country, i in countries.items():
            answers = survey.answers.get((country, qid))
            if answers is None:
                continue
            if protocol is Protocol.BINARY:
                assert question.binary is not None
                agree, disagree = answers.side_shares(question.binary)
                index[i, row] = 0 if agree >= disagree else 1
            else:
                index[i, row] = codes.index(answers.majority_option)
    for array in (index, n_options, ordinal, labels):
        array.setflags(write=False)
    present = index >= 0
    present.setflags(write=False)
    return _Majorities(countries, index, present, n_options, ordinal, labels)


class QuestionConcordance:
    """Leave-one-country-out concordance of copying between the questions ``ids`` (see the module docstring).

    :meth:`row` gives, for a test question and a target country, every row's concordance with the test
    question over the other countries. Thread-safe; cached like :class:`QuestionAssociation`.
    """

    def __init__(self, survey: Survey, protocol: Protocol, ids: Sequence[str]) -> None:
        check_countries(survey, "value-structure concordance (learned selection) needs")
        self.survey = survey
        self.protocol = protocol
        self.ids = tuple(ids)
        self._position = {qid: i for i, qid in enumerate(self.ids)}
        self._m = _majorities(survey, protocol, self.ids)
        denominators = np.maximum(self._m.n_options - 1, 1)
        self._positions = np.where(self._m.present, self._m.index / denominators, np.nan)  # relative positions
        self._cache_rows = max(16, _CACHE_CELLS // max(1, len(self.ids)))
        self._rows: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()

    def row(self, question_id: str, country: str) -> np.ndarray:
        """The concordance of every row with ``question_id``, leaving out ``country``; NaN where undefined."""
        row = self._position[question_id]
        target = self._m.countries.get(country)
        key = (row, -1 if target is None else target)
        cached = self._rows.get(key)
        if cached is not None:
            return cached
        out = self._compute(row, target)
        out.setflags(write=False)
        with self._lock:
            if len(self._rows) >= self._cache_rows:
                self._rows.clear()
            self._rows[key] = out
        return out

    def copied(self, test_row: int) -> tuple[np.ndarray, np.ndarray]:
        """Countries x rows: the test question's answer index that copying each row's majority gives, and
        where copying is defined (answered, and a usable kind of candidate)."""
        m = self._m
        if self.protocol is Protocol.BINARY:
            return m.index, m.present.copy()
        n = int(m.n_options[test_row])
        if m.ordinal[test_row]:
            usable = m.present & m.ordinal[None, :]
            x = np.where(usable, self._positions, 0.0) * (n - 1)
            # the nearest option, an exact midpoint going to the earlier one (as the copier does)
            copied = np.clip(np.ceil(x - 0.5 - 1e-9), 0, n - 1).astype(np.int64)
            return copied, usable
        usable = m.present & (m.labels[None, :] == m.labels[test_row]) & ~m.ordinal[None, :]
        return m.index, usable

    def _compute(self, row: int, target: int | None) -> np.ndarray:
        m = self._m
        out = np.full(len(self.ids), np.nan)
        if m.n_options[row] == 0:
            return out
        others = m.present[:, row].copy()
        if target is not None:
            others[target] = False  # the target's answers never count, to any question
        copied, usable = self.copied(row)
        usable = usable & others[:, None]
        hits = usable & (copied == m.index[:, row][:, None])
        n = usable.sum(axis=0)
        h = hits.sum(axis=0)
        defined = n >= MIN_COUNTRIES
        out[defined] = (h[defined] + 0.5) / (n[defined] + 1.0)
        return out
