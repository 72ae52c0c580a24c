"""A tidy answers CSV (``country,question_id,option_code,share``) plus a questions CSV.

The questions CSV has the columns ``question_id,question,options`` where ``options`` is a JSON object
mapping option codes to labels in order, and optionally ``topic``, ``scale`` (ordinal/nominal),
``statement``, ``agree`` and ``disagree`` (JSON lists of option codes) for the binary protocol, and
``battery``. Countries may be ISO3 codes or English names.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from selfalign.countries import code_for_name, country_name
from selfalign.errors import SurveyFormatError
from selfalign.loaders.csvfile import csv_rows
from selfalign.survey import BinarySplit, CountryAnswers, LanguageInfo, Option, Question, ScaleKind, Survey

ANSWER_COLUMNS = ("country", "question_id", "option_code", "share")
QUESTION_COLUMNS = ("question_id", "question", "options")


def _json_field(text: str, what: str, path: Path, line: int) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise SurveyFormatError(path, f"'{what}' is not valid JSON", line) from None


def read_questions_csv(path: str | Path) -> list[Question]:
    """Read the questions CSV of the tidy format."""
    file = Path(path)
    if not file.exists():
        raise SurveyFormatError(file, "file not found")
    questions: list[Question] = []
    seen: set[str] = set()
    with csv_rows(file, QUESTION_COLUMNS, str(list(QUESTION_COLUMNS))) as rows:
        for line, row in rows:
            qid = row["question_id"].strip()
            if not qid:
                raise SurveyFormatError(file, "empty question_id", line)
            if qid in seen:
                raise SurveyFormatError(file, f"duplicate question id {qid}", line)
            seen.add(qid)
            options = _json_field(row["options"], "options", file, line)
            if not isinstance(options, dict) or len(options) < 2:
                raise SurveyFormatError(file, f"{qid}: 'options' must be a JSON object code -> label (>= 2)", line)
            binary = None
            statement = (row.get("statement") or "").strip()
            if statement:
                agree = _json_field(row.get("agree") or "[]", "agree", file, line)
                disagree = _json_field(row.get("disagree") or "[]", "disagree", file, line)
                binary = BinarySplit({"en": statement}, tuple(map(str, agree or ())), tuple(map(str, disagree or ())))
            scale_text = (row.get("scale") or "nominal").strip().lower()
            if scale_text not in ("ordinal", "nominal"):
                raise SurveyFormatError(file, f"{qid}: scale must be ordinal or nominal, not {scale_text!r}", line)
            try:
                questions.append(
                    Question(
                        id=qid,
                        topic=(row.get("topic") or "General").strip(),
                        scale=ScaleKind(scale_text),
                        options=tuple(Option(str(c), {"en": str(v)}) for c, v in options.items()),
                        texts={"en": row["question"].strip()},
                        binary=binary,
                        binary_skip_reason=None if binary else "no statement given",
                        battery=(row.get("battery") or "").strip() or None,
                    )
                )
            except Exception as exc:  # the model's own validation
                raise SurveyFormatError(file, str(exc), line) from None
    if not questions:
        raise SurveyFormatError(file, "no questions")
    return questions


def read_tidy(answers_path: str | Path, questions_path: str | Path, *, name: str = "tidy-import") -> Survey:
    """Read a tidy answers CSV and its questions CSV into a survey."""
    questions = {q.id: q for q in read_questions_csv(questions_path)}
    file = Path(answers_path)
    if not file.exists():
        raise SurveyFormatError(file, "file not found")
    groups: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    first_line: dict[tuple[str, str], int] = {}
    names: dict[str, str] = {}
    with csv_rows(file, ANSWER_COLUMNS, str(list(ANSWER_COLUMNS))) as rows:
        for line, row in rows:
            country_text, qid, code = row["country"].strip(), row["question_id"].strip(), row["option_code"].strip()
            question = questions.get(qid)
            if question is None:
                raise SurveyFormatError(file, f"question {qid!r} is not in the questions file", line)
            if code not in question.option_codes:
                raise SurveyFormatError(file, f"option code {code!r} is not among {qid}'s options", line)
            try:
                share = float(row["share"])
            except (TypeError, ValueError):
                raise SurveyFormatError(file, f"share {row['share']!r} is not a number", line) from None
            if math.isnan(share) or share < 0 or share > 1 + 1e-9:
                raise SurveyFormatError(file, f"share {share} is outside [0, 1]", line)
            country = code_for_name(country_text)
            names.setdefault(country, country_name(country) if len(country_text) == 3 else country_text)
            key = (country, qid)
            if code in groups[key]:
                raise SurveyFormatError(file, f"duplicate row for {country}/{qid} option {code}", line)
            groups[key][code] = share
            first_line.setdefault(key, line)
    if not groups:
        raise SurveyFormatError(file, "no answer rows")
    answers = []
    for key, shares in groups.items():
        total = sum(shares.values())
        if abs(total - 1) > 1e-6:
            raise SurveyFormatError(file, f"shares of {key[0]}/{key[1]} sum to {total:.9f}, not 1", first_line[key])
        order = questions[key[1]].option_codes
        answers.append(
            CountryAnswers(key[0], key[1], {c: shares[c] for c in order if c in shares}, None, True, file.name)
        )
    return Survey.build(
        name,
        questions.values(),
        answers,
        country_names=names,
        languages=[LanguageInfo("en", "English", "agree", "disagree", produced="imported")],
        metadata={"title": f"Imported from {file.name}"},
    )
