"""Anthropic's GlobalOpinionQA CSV (``question,selections,options,source``) -> per-country distributions.

As published, ``selections`` reads like ``defaultdict(<class 'list'>, {'Belgium': [0.21, 0.79], ...})`` and
``options`` like ``['Yes', 'No']``. Both are parsed as literals (never evaluated): the dict inside the
``defaultdict(...)`` repr may hold only strings, numbers, lists and ``nan``/``inf``.

Country names go through :func:`selfalign.countries.match_country` (coco); sample variants such as
``India (Current national sample)`` become ``IND.current_national`` (see ``--sample-variants``).

A (country, question) pair whose shares cannot be used (all zero, a count that differs from the options',
NaN or negative, a sum more than 0.02 off 1, a name coco cannot map, one country given twice in a
question, e.g. as ``S. Korea`` and ``South Korea``: both are skipped) is skipped and recorded in the
:class:`ImportReport`; shares off by rounding (sum within 0.02 of 1) are renormalised. A row whose
options or selections cannot be parsed is skipped whole, and so is a question left without any usable
pair. ``ImportReport(strict=True)`` refuses the file at the first such problem instead.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Any

from selfalign.countries import match_country
from selfalign.errors import SurveyFormatError
from selfalign.loaders.csvfile import csv_rows
from selfalign.loaders.report import ImportReport
from selfalign.survey import CountryAnswers, LanguageInfo, Option, Question, ScaleKind, Survey

REQUIRED = ("question", "selections", "options")
ROUNDING_TOLERANCE = 0.02
_DEFAULTDICT = re.compile(r"^\s*defaultdict\(\s*<class '[A-Za-z_.]+'>\s*,\s*(\{.*\})\s*\)\s*$", re.DOTALL)
_SPECIAL_FLOATS = {"nan": math.nan, "NaN": math.nan, "inf": math.inf, "Infinity": math.inf}


class _NotLiteral(ValueError):
    pass


def _literal(node: ast.AST) -> Any:
    """A plain value from a parsed literal: dicts, lists, tuples, strings, numbers, ``nan`` and ``inf``."""
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str | int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Name) and node.id in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand)
        if isinstance(value, int | float):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    raise _NotLiteral(type(node).__name__)


def parse_literal(text: str) -> Any:
    """Parse a Python literal as GlobalOpinionQA writes them (``defaultdict(<class 'list'>, {...})`` unwrapped).

    Raises :class:`ValueError` for anything else; nothing is ever evaluated.
    """
    match = _DEFAULTDICT.match(text)
    body = match.group(1) if match else text.strip()
    try:
        return _literal(ast.parse(body, mode="eval").body)
    except (SyntaxError, _NotLiteral, RecursionError, MemoryError, ValueError) as exc:
        raise ValueError(f"not a literal ({type(exc).__name__})") from None


def _shares(raw: Any, n_options: int) -> tuple[list[float] | None, str]:
    """The shares of one pair, or None and why they cannot be used."""
    if not isinstance(raw, list):
        return None, "shares are not a list"
    if len(raw) != n_options:
        return None, f"{len(raw)} shares for {n_options} options"
    if not all(isinstance(v, int | float) for v in raw):
        return None, "a share is not a number"
    values = [float(v) for v in raw]
    if any(math.isnan(v) or math.isinf(v) for v in values):
        return None, "a share is NaN or infinite"
    if any(v < 0 for v in values):
        return None, "a share is negative"
    total = sum(values)
    if total == 0:
        return None, "shares are all zero"
    if abs(total - 1) > ROUNDING_TOLERANCE:
        return None, f"shares sum to {total:.4f}, not 1"
    return [v / total for v in values], ""


def read_global_opinions(
    path: str | Path,
    *,
    name: str = "global-opinions",
    sample_variants: str = "separate",
    report: ImportReport | None = None,
) -> Survey:
    """Read a GlobalOpinionQA CSV file into a survey (one question per row, topic = the ``source`` column).

    ``sample_variants``: ``separate`` (``IND.current_national``), ``merge`` (into ``IND`` where the question
    has no other pair for India; else skipped) or ``drop``. What was skipped is recorded in ``report``.
    """
    file = Path(path)
    report = report if report is not None else ImportReport()
    questions: list[Question] = []
    answers: list[CountryAnswers] = []
    names: dict[str, str] = {}
    with csv_rows(file, REQUIRED, "question,selections,options,source") as rows:
        for line, row in rows:
            qid = f"GOQA{line - 1:05d}"
            text = row["question"].strip()
            try:
                options = parse_literal(row["options"])
            except ValueError:
                report.skip_row(file, line, "'options' is not a list literal")
                continue
            if not isinstance(options, list) or len(options) < 2:
                report.skip_row(file, line, "'options' must list at least two answers")
                continue
            labels = [" ".join(str(o).split()) for o in options]
            if not text or not all(labels):
                report.skip_row(file, line, "the question or an option label is empty")
                continue
            try:
                selections = parse_literal(row["selections"])
            except ValueError:
                report.skip_row(file, line, "'selections' is not a dict of country -> list of shares")
                continue
            if not isinstance(selections, dict):
                report.skip_row(file, line, "'selections' is not a dict of country -> list of shares")
                continue
            codes = [str(i + 1) for i in range(len(options))]
            found: dict[str, list[tuple[str, list[float]]]] = {}
            for country, raw in selections.items():
                report.pairs_seen += 1
                if not isinstance(country, str) or not country.strip():
                    report.skip_pair(file, line, "the country is not a name", str(country), qid)
                    continue
                match = match_country(country, sample_variants)
                if match is None:
                    if sample_variants == "drop" and match_country(country, "merge") is not None:
                        report.dropped_sample(country)
                    else:
                        report.unmapped_name(file, line, country, qid)
                    continue
                values, why = _shares(raw, len(options))
                if values is None:
                    report.skip_pair(file, line, why, country, qid)
                    continue
                found.setdefault(match.code, []).append((country, values))
                names.setdefault(match.code, match.name)
                report.mapped(country, match.code)
            kept: dict[str, list[float]] = {}
            for code, pairs in found.items():
                if len(pairs) == 1:
                    kept[code] = pairs[0][1]
                    continue
                named = " and ".join(repr(c) for c, _ in pairs)
                for country, _ in pairs:
                    report.skip_pair(file, line, f"{code} is given twice in this question ({named})", country, qid)
            if not kept:
                report.empty_questions += 1
            questions.append(
                Question(
                    id=qid,
                    topic=(row.get("source") or "GlobalOpinionQA").strip() or "GlobalOpinionQA",
                    scale=ScaleKind.NOMINAL,
                    options=tuple(Option(c, {"en": label}) for c, label in zip(codes, labels, strict=True)),
                    texts={"en": text},
                    binary_skip_reason="imported without a two-sided statement",
                )
            )
            for code, values in kept.items():
                shares = dict(zip(codes, values, strict=True))
                answers.append(CountryAnswers(code, qid, shares, None, True, "GlobalOpinionQA"))
    if not answers:
        raise SurveyFormatError(file, "no usable (country, question) pairs" + _why_nothing(report))
    used = {a.question_id for a in answers}
    return Survey.build(
        name,
        [q for q in questions if q.id in used],
        answers,
        country_names=names,
        languages=[LanguageInfo("en", "English", "agree", "disagree", produced="GlobalOpinionQA")],
        metadata={"title": f"Imported from GlobalOpinionQA ({file.name})"},
    )


def _why_nothing(report: ImportReport) -> str:
    summary = report.summary(hints=False)
    return f" ({summary})" if summary else ""
