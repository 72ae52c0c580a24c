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

__all__ = ["MIN_COUNTRIES", "QuestionAssociation", "check_countries"]


def check_countries(survey: Survey) -> None:
    """Raise a one-line :class:`SelfAlignError` when ``survey`` has too few countries for associations."""
    n = len(survey.countries)
    if n < MIN_COUNTRIES + 1:
        raise SelfAlignError(
            f"survey {survey.name} has {n} {'country' if n == 1 else 'countries'}; the correlation strategy "
            f"needs at least {MIN_COUNTRIES + 1} (the target and {MIN_COUNTRIES} others to correlate answers across)"
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
