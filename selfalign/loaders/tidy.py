"""A tidy answers CSV (``country,question_id,option_code,share``) plus a questions CSV.

The questions CSV has the columns ``question_id,question,options`` where ``options`` is a JSON object
mapping option codes to labels in order, and optionally ``topic``, ``scale`` (ordinal/nominal),
``statement``, ``agree`` and ``disagree`` (JSON lists of option codes) for the binary protocol, and
``battery``. Countries may be ISO3 codes or names in any spelling coco knows (sample codes such as
``IND.current_national`` too); rows of a name coco cannot map are skipped and reported.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from selfalign.countries import CountryMatch, match_country
from selfalign.errors import SelfAlignError, SurveyFormatError
from selfalign.loaders.csvfile import csv_rows
from selfalign.loaders.report import ImportReport
from selfalign.survey import BinarySplit, CountryAnswers, LanguageInfo, Option, Question, ScaleKind, Survey

ANSWER_COLUMNS = ("country", "question_id", "option_code", "share")
QUESTION_COLUMNS = ("question_id", "question", "options")


def _json_field(text: str, what: str, path: Path, line: int) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise SurveyFormatError(path, f"'{what}' is not valid JSON", line) from None


def _side(text: str, what: str, codes: list[str], qid: str, path: Path, line: int) -> tuple[str, ...]:
    """One side of the binary split: a JSON list of option codes that are among the question's options."""
    value = _json_field(text or "[]", what, path, line)
    if not isinstance(value, list) or not all(isinstance(c, str | int) and not isinstance(c, bool) for c in value):
        raise SurveyFormatError(path, f'{qid}: \'{what}\' must be a JSON list of option codes, e.g. ["1", "2"]', line)
    side = tuple(str(c) for c in value)
    unknown = [c for c in side if c not in codes]
    if unknown:
        raise SurveyFormatError(
            path, f"{qid}: '{what}' names codes {unknown} that are not among its options {codes}", line
        )
    return side


def read_questions_csv(path: str | Path) -> list[Question]:
    """Read the questions CSV of the tidy format."""
    file = Path(path)
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
            codes = [str(c) for c in options]
            if statement:
                agree = _side(row.get("agree") or "", "agree", codes, qid, file, line)
                disagree = _side(row.get("disagree") or "", "disagree", codes, qid, file, line)
                binary = BinarySplit({"en": statement}, agree, disagree)
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
            except (SelfAlignError, ValueError) as exc:  # the model's own validation
                raise SurveyFormatError(file, str(exc), line) from None
    if not questions:
        raise SurveyFormatError(file, "no questions")
    return questions


def read_tidy(
    answers_path: str | Path,
    questions_path: str | Path,
    *,
    name: str = "tidy-import",
    sample_variants: str = "separate",
    report: ImportReport | None = None,
) -> Survey:
    """Read a tidy answers CSV and its questions CSV into a survey (skipped rows are recorded in ``report``)."""
    report = report if report is not None else ImportReport()
    questions = {q.id: q for q in read_questions_csv(questions_path)}
    file = Path(answers_path)
    resolved: dict[str, CountryMatch | None] = {}
    skipped: set[tuple[str, str]] = set()
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
            if country_text not in resolved:
                resolved[country_text] = match_country(country_text, sample_variants) if country_text else None
            match = resolved[country_text]
            if match is None:
                if (country_text, qid) not in skipped:
                    skipped.add((country_text, qid))
                    report.pairs_seen += 1
                    if sample_variants == "drop" and match_country(country_text, "merge") is not None:
                        report.dropped_sample(country_text)
                    else:
                        report.unmapped_name(file, line, country_text or "(empty)", qid)
                continue
            country = match.code
            names.setdefault(country, match.name)
            report.mapped(country_text, country)
            key = (country, qid)
            if code in groups[key]:
                raise SurveyFormatError(file, f"duplicate row for {country}/{qid} option {code}", line)
            groups[key][code] = share
            first_line.setdefault(key, line)
    if not groups:
        summary = report.summary(hints=False)
        raise SurveyFormatError(file, "no answer rows" + (f" left ({summary})" if summary else ""))
    report.pairs_seen += len(groups)
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
