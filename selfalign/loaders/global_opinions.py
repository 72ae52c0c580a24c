"""Anthropic's GlobalOpinionQA CSV (``question,selections,options,source``) -> per-country distributions.

``selections`` reads like ``defaultdict(<class 'list'>, {'Belgium': [0.21, 0.79], ...})`` and ``options``
like ``['Yes', 'No']``. Country names become ISO3 codes where known. Rows whose shares are off by rounding
(sum within 0.02 of 1) are renormalised; larger deviations are errors.
"""

from __future__ import annotations

import ast
import csv
import math
import re
import sys
from pathlib import Path

from selfalign.countries import code_for_name
from selfalign.errors import SurveyFormatError
from selfalign.loaders.csvfile import csv_rows
from selfalign.survey import CountryAnswers, LanguageInfo, Option, Question, ScaleKind, Survey

REQUIRED = ("question", "selections", "options")
ROUNDING_TOLERANCE = 0.02
_DEFAULTDICT = re.compile(r"^\s*defaultdict\(\s*<class '[a-z]+'>\s*,\s*(\{.*\})\s*\)\s*$", re.DOTALL)


def _parse_selections(text: str, path: Path, line: int) -> dict[str, list[float]]:
    match = _DEFAULTDICT.match(text)
    literal = match.group(1) if match else text
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        raise SurveyFormatError(path, "'selections' is not a dict of country -> list of shares", line) from None
    if not isinstance(value, dict):
        raise SurveyFormatError(path, "'selections' is not a dict of country -> list of shares", line)
    return value


def read_global_opinions(path: str | Path, *, name: str = "global-opinions") -> Survey:
    """Read a GlobalOpinionQA CSV file into a survey (one question per row, topic = the ``source`` column)."""
    file = Path(path)
    if not file.exists():
        raise SurveyFormatError(file, "file not found")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    questions: list[Question] = []
    answers: list[CountryAnswers] = []
    names: dict[str, str] = {}
    with csv_rows(file, REQUIRED, "question,selections,options,source") as rows:
        for line, row in rows:
            try:
                options = ast.literal_eval(row["options"])
            except (ValueError, SyntaxError):
                raise SurveyFormatError(file, "'options' is not a list literal", line) from None
            if not isinstance(options, list) or len(options) < 2:
                raise SurveyFormatError(file, "'options' must list at least two answers", line)
            qid = f"GOQA{line - 1:05d}"
            codes = [str(i + 1) for i in range(len(options))]
            questions.append(
                Question(
                    id=qid,
                    topic=(row.get("source") or "GlobalOpinionQA").strip(),
                    scale=ScaleKind.NOMINAL,
                    options=tuple(Option(c, {"en": str(o)}) for c, o in zip(codes, options, strict=True)),
                    texts={"en": row["question"].strip()},
                    binary_skip_reason="imported without a two-sided statement",
                )
            )
            for country, shares in _parse_selections(row["selections"], file, line).items():
                if len(shares) != len(options):
                    raise SurveyFormatError(file, f"{country}: {len(shares)} shares for {len(options)} options", line)
                try:
                    values = [float(s) for s in shares]
                except (TypeError, ValueError):
                    raise SurveyFormatError(file, f"{country}: a share is not a number", line) from None
                total = sum(values)
                if any(math.isnan(v) or v < 0 for v in values) or abs(total - 1) > ROUNDING_TOLERANCE:
                    raise SurveyFormatError(file, f"{country}: shares sum to {total:.4f}, not 1", line)
                code = code_for_name(country)
                names[code] = country
                answers.append(
                    CountryAnswers(
                        code,
                        qid,
                        {c: v / total for c, v in zip(codes, values, strict=True)},
                        None,
                        True,
                        "GlobalOpinionQA",
                    )
                )
    if not questions:
        raise SurveyFormatError(file, "no questions")
    return Survey.build(
        name,
        questions,
        answers,
        country_names=names,
        languages=[LanguageInfo("en", "English", "agree", "disagree", produced="GlobalOpinionQA")],
        metadata={"title": f"Imported from GlobalOpinionQA ({file.name})"},
    )
