"""Model-free references: what copying the shown demonstrations' answers would score, with no model at all.

For every row of a run table that showed demonstrations (``demo_ids``), a *copier* answers the test question
from the answers the prompt showed, and is scored with the same metrics as the model
(:func:`selfalign.metrics.agreement` against the country's shares, :func:`selfalign.metrics.js_similarity`).
A table can then put, per demonstration program, the model beside "copying the demonstrations (no model)":
if the model does no better than the copier, the demonstrations did the work.

What a demonstration shows is taken as the prompt showed it: the country's majority side (binary protocol)
or majority option (options protocol; for the ``distribution`` answer form, the majority of the shown
distribution), and the fixed answer of a compiled program's fixed demonstrations (``fixed_demos`` in
``program_config``). "Nearest the test question" means shown last, just before it, whatever the program's
order setting (``demo_ids`` are in prompt order).

Binary protocol
    The copier answers the side most demonstrations showed; on a tie (an even k), the demonstration nearest
    the test question decides. As a distribution, it gives each side the share of demonstrations showing it.

Options protocol
    - Ordinal test question: each demonstration on an ordinal scale contributes its shown option's relative
      position ``i / (N - 1)`` on its own scale (0 = first option in survey order, 1 = last). The copier
      answers the test option nearest the mean position; a mean exactly between two options goes to the one
      nearer the position of the nearest (last shown) ordinal demonstration, then to the earlier option. As
      a distribution, each demonstration votes for the test option nearest its own position (a position
      exactly between two options gives each half a vote).
    - Nominal test question: demonstrations with the same option set (the same option labels in the same
      order) vote for the option they showed; the copier answers the most voted option, a tie going to the
      tied option shown nearest the test question. As a distribution: the vote shares.
    - Demonstrations of another kind (nominal ones for an ordinal test question, other option sets for a
      nominal one, agree/disagree under the ``side`` answer form) abstain. With no vote at all the copier
      guesses uniformly: its agreement is then the chance level ``1 / N`` (or the tied share of it).

Rows without demonstrations (zero-shot, persona) have no copy (NaN). :func:`summarize_copying` computes the
copier's mean agreement and JS similarity with the project's cluster-bootstrap intervals over questions
(:func:`~selfalign.metrics.bootstrap_ci`) and the paired difference model minus copier on the same probes
(:func:`~selfalign.metrics.paired_difference`), on the rows whose model probe succeeded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.metrics import agreement, bootstrap_ci, js_similarity, paired_difference
from selfalign.survey import Protocol, Question, ScaleKind, Survey

COPY_COLUMNS: tuple[str, ...] = ("copy_choice", "copy_agreement", "copy_js_similarity")
"""Columns :func:`add_copy_columns` adds: the copier's answer code ("" when it guessed uniformly), and its
agreement (0-1, like the run table's ``agreement``) and JS similarity with the country's shares."""
COPY_SUMMARY: tuple[str, ...] = (
    "copy_n",
    "copy_agreement_mean",
    "copy_agreement_ci_low",
    "copy_agreement_ci_high",
    "copy_js_similarity_mean",
    "copy_js_similarity_ci_low",
    "copy_js_similarity_ci_high",
    "model_vs_copy",
    "model_vs_copy_ci_low",
    "model_vs_copy_ci_high",
    "model_vs_copy_p",
)
"""The columns :func:`summarize_copying` adds to the ``by`` columns (see there)."""
_TIE = 1e-9

__all__ = [
    "COPY_COLUMNS",
    "COPY_INPUTS",
    "COPY_SUMMARY",
    "Copy",
    "add_copy_columns",
    "copy_binary",
    "copy_options",
    "shown_answers",
    "summarize_copying",
    "table_survey",
]


@dataclass(frozen=True)
class Copy:
    """The copier's answer to one probe: the chosen code (None: no vote, uniform guess) and a distribution
    over the test question's codes (binary: ``("agree", "disagree")``)."""

    choice: str | None
    codes: tuple[str, ...]
    probs: tuple[float, ...]

    def score(self, country_shares: Sequence[float]) -> tuple[float, float]:
        """(agreement, JS similarity) against the country's shares, in the order of :attr:`codes`."""
        if self.choice is None:
            answer: Sequence[float] = [1.0 / len(self.codes)] * len(self.codes)
        else:
            answer = [1.0 if c == self.choice else 0.0 for c in self.codes]
        return agreement(answer, country_shares), js_similarity(self.probs, country_shares)


def shown_answers(
    survey: Survey,
    country: str,
    protocol: Protocol | str,
    demo_ids: Sequence[str],
    *,
    answer_form: str = "majority",
    fixed: Mapping[str, str] | None = None,
) -> list[tuple[str, str | None]]:
    """``(question id, code shown)`` for each demonstration, in prompt order.

    The code is ``"agree"``/``"disagree"`` under the binary protocol and an option code under ``options``;
    None where the demonstration shows something a copier cannot use (the ``side`` answer form under
    ``options``, or a fixed demonstration without a binary statement under ``binary``). ``fixed`` maps the
    question ids of a compiled program's fixed demonstrations to the answer code they show.
    """
    proto = Protocol(protocol)
    out: list[tuple[str, str | None]] = []
    for qid in demo_ids:
        question = survey.question(qid)
        if fixed and qid in fixed:
            code: str | None = fixed[qid]
            if proto is Protocol.BINARY:
                code = None if question.binary is None else ("agree" if code == "agree" else "disagree")
            elif code not in question.option_code_set:
                code = None
        elif proto is Protocol.BINARY:
            code = survey.majority_side(country, qid)
        elif answer_form == "side":
            code = None
        else:
            code = survey.majority_option(country, qid)
        out.append((qid, code))
    return out


def copy_binary(sides: Sequence[str | None]) -> Copy:
    """The binary copier: the side most demonstrations showed, a tie decided by the last one shown."""
    votes = [s for s in sides if s in ("agree", "disagree")]
    codes = ("agree", "disagree")
    if not votes:
        return Copy(None, codes, (0.5, 0.5))
    agree = sum(s == "agree" for s in votes)
    disagree = len(votes) - agree
    choice = "agree" if agree > disagree else "disagree" if disagree > agree else votes[-1]
    return Copy(choice, codes, (agree / len(votes), disagree / len(votes)))


def _position(question: Question, code: str) -> float:
    return question.option_codes.index(code) / (len(question.option_codes) - 1)


def _nearest(grid: np.ndarray, value: float) -> np.ndarray:
    """Indices of the grid points nearest ``value`` (two at an exact midpoint)."""
    distance = np.abs(grid - value)
    return np.flatnonzero(distance <= distance.min() + _TIE)


def copy_options(survey: Survey, test: Question, shown: Sequence[tuple[str, str | None]]) -> Copy:
    """The options-protocol copier for ``test`` from the demonstrations' shown codes (see the module docstring)."""
    codes = test.option_codes
    n = len(codes)
    if test.scale is ScaleKind.ORDINAL:
        grid = np.linspace(0.0, 1.0, n)
        positions = [
            _position(q, code)
            for q, code in ((survey.question(qid), code) for qid, code in shown)
            if code is not None and q.scale is ScaleKind.ORDINAL
        ]
        if not positions:
            return Copy(None, codes, (1.0 / n,) * n)
        votes = np.zeros(n)
        for p in positions:
            nearest = _nearest(grid, p)
            votes[nearest] += 1.0 / len(nearest)
        nearest = _nearest(grid, float(np.mean(positions)))
        if len(nearest) > 1:  # exactly between two options: the one nearer the last ordinal demonstration
            nearest = nearest[_nearest(grid[nearest], positions[-1])]
        return Copy(codes[int(nearest[0])], codes, tuple(float(v) for v in votes / votes.sum()))
    labels = test.option_labels(survey.languages[0])
    tally: dict[str, int] = {}
    last: dict[str, int] = {}
    for n_shown, (qid, code) in enumerate(shown):
        q = survey.question(qid)
        if code is None or q.option_labels(survey.languages[0]) != labels:
            continue
        chosen = codes[q.option_codes.index(code)]
        tally[chosen] = tally.get(chosen, 0) + 1
        last[chosen] = n_shown
    if not tally:
        return Copy(None, codes, (1.0 / n,) * n)
    total = sum(tally.values())
    choice = max(tally, key=lambda c: (tally[c], last[c]))
    return Copy(choice, codes, tuple(tally.get(c, 0) / total for c in codes))


def _json(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


class _Configs:
    """Answer form and fixed demonstrations of each distinct ``program_config`` (parsed once)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, dict[str, str]]] = {}

    def get(self, raw: Any) -> tuple[str, dict[str, str]]:
        key = raw if isinstance(raw, str) else ""
        if key not in self._seen:
            config = _json(raw) if key else None
            form, fixed = "majority", {}
            if isinstance(config, dict):
                for part in config.get("parts", []):
                    if "answer_form" in part:
                        form = str(part["answer_form"])
                        break
                fixed = {
                    str(d["question_id"]): str(d.get("answer_code"))
                    for d in config.get("fixed_demos", [])
                    if d.get("question_id")
                }
            self._seen[key] = (form, fixed)
        return self._seen[key]


COPY_INPUTS: tuple[str, ...] = ("country", "question_id", "protocol", "demo_ids", "option_codes", "country_shares")
"""Run-table columns :func:`add_copy_columns` needs."""


def add_copy_columns(table: pd.DataFrame, survey: Survey) -> pd.DataFrame:
    """A copy of ``table`` with :data:`COPY_COLUMNS` (NaN and "" on rows that showed no demonstration).

    Needs the run table's ``country``, ``question_id``, ``protocol``, ``demo_ids``, ``option_codes`` and
    ``country_shares`` columns (``program_config`` when present, for the answer form and fixed
    demonstrations); ``survey`` is the survey the rows were run on.
    """
    for col in COPY_INPUTS:
        if col not in table.columns:
            raise UnknownChoiceError("column", col, table.columns, hint="needed for the model-free references")
    configs = _Configs()
    choices: list[str] = []
    agreements: list[float] = []
    similarities: list[float] = []
    program_configs = table["program_config"] if "program_config" in table.columns else [None] * len(table)
    for country, qid, protocol, demo_raw, codes_raw, shares_raw, config in zip(
        table["country"],
        table["question_id"],
        table["protocol"],
        table["demo_ids"],
        table["option_codes"],
        table["country_shares"],
        program_configs,
        strict=True,
    ):
        demo_ids = _json(demo_raw) or []
        if not demo_ids:
            choices.append("")
            agreements.append(math.nan)
            similarities.append(math.nan)
            continue
        form, fixed = configs.get(config)
        proto = Protocol(protocol)
        shown = shown_answers(survey, country, proto, demo_ids, answer_form=form, fixed=fixed)
        if proto is Protocol.BINARY:
            copied = copy_binary([code for _, code in shown])
        else:
            copied = copy_options(survey, survey.question(qid), shown)
        codes = list(_json(codes_raw))
        if list(copied.codes) != codes:
            raise SelfAlignError(f"{country}/{qid}: the run table's option codes {codes} are not the survey's")
        shares_by_code = _json(shares_raw)
        agree, js = copied.score([float(shares_by_code[c]) for c in codes])
        choices.append(copied.choice or "")
        agreements.append(agree)
        similarities.append(js)
    return table.assign(copy_choice=choices, copy_agreement=agreements, copy_js_similarity=similarities)


def table_survey(table: pd.DataFrame) -> Survey | None:
    """The survey a run table was run on, loaded by its name; None when it is not one survey or not found."""
    from selfalign.loaders import load_survey

    if "survey" not in table.columns:
        return None
    names = table["survey"].dropna().astype(str).unique()
    if len(names) != 1:
        return None
    try:
        return load_survey(names[0])
    except SelfAlignError:
        return None


def summarize_copying(
    table: pd.DataFrame,
    by: Sequence[str],
    survey: Survey | None = None,
    *,
    n_boot: int = 2000,
    n_perm: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per group of ``by``: the copier's agreement (percent) and JS similarity with intervals, and the paired
    difference model minus copier in agreement (percentage points, interval, p-value).

    Only rows whose model probe succeeded (``ok``) and that showed demonstrations count, so model and copier
    are compared on exactly the same probes. Columns: the ``by`` columns and :data:`COPY_SUMMARY`
    (``copy_n`` rows, ``copy_agreement_mean`` / ``_ci_low`` / ``_ci_high``, the same for
    ``copy_js_similarity``, ``model_vs_copy`` with ``_ci_low``, ``_ci_high`` and ``_p``). Groups without
    demonstrations get NaN. ``survey`` is needed unless ``table`` already has the :data:`COPY_COLUMNS`.
    """
    by = list(by)
    if not set(COPY_COLUMNS) <= set(table.columns):
        if survey is None:
            raise SelfAlignError("model-free references need the survey the run table was run on")
        table = add_copy_columns(table, survey)
    rows: list[dict[str, object]] = []
    groups = [((), table)] if not by else table.groupby(by, dropna=False, sort=True)
    for key, frame in groups:
        key = key if isinstance(key, tuple) else (key,)
        ok = frame["ok"].fillna(False).astype(bool) & frame["copy_agreement"].notna()
        good = frame[ok]
        clusters = good["question_id"].to_numpy()
        copy_agree = good["copy_agreement"].to_numpy(dtype=float) * 100
        model_agree = good["agreement"].to_numpy(dtype=float) * 100
        row: dict[str, object] = dict(zip(by, key, strict=True))
        mean, lo, hi = bootstrap_ci(copy_agree, clusters, n_boot=n_boot, seed=seed, level=level)
        js, js_lo, js_hi = bootstrap_ci(
            good["copy_js_similarity"].to_numpy(dtype=float), clusters, n_boot=n_boot, seed=seed, level=level
        )
        diff = paired_difference(
            model_agree, copy_agree, clusters, n_boot=n_boot, n_perm=n_perm, seed=seed, level=level
        )
        row.update(
            copy_n=len(good),
            copy_agreement_mean=mean,
            copy_agreement_ci_low=lo,
            copy_agreement_ci_high=hi,
            copy_js_similarity_mean=js,
            copy_js_similarity_ci_low=js_lo,
            copy_js_similarity_ci_high=js_hi,
            model_vs_copy=diff.mean_diff,
            model_vs_copy_ci_low=diff.ci_low,
            model_vs_copy_ci_high=diff.ci_high,
            model_vs_copy_p=diff.p_value,
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=[*by, *COPY_SUMMARY])
