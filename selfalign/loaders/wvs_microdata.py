"""Official WVS respondent-level data files (wave 7, per-country or pooled CSV) -> weighted country shares.

The WVS distributes CSV files separated by ``;`` or ``,``, often with a UTF-8 byte-order mark and quoted
headers. The country is ``B_COUNTRY_ALPHA``, the weight ``W_WEIGHT`` and the answers ``Q…`` columns, where
negative codes mean "don't know", "no answer", "not asked" or missing, and are left out.

Question wordings, options and topics come from a base survey (the bundled ``wvs7`` by default) for the
``Q…`` columns it knows; other ``Q…`` columns are skipped unless a questions file describes them.

Country codes are checked with coco (:func:`selfalign.countries.match_country`, which also knows the WVS's
``NIR`` for Northern Ireland); respondents of a code it cannot map are skipped and the code reported.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from selfalign.countries import CountryMatch, match_country
from selfalign.errors import SurveyFormatError
from selfalign.loaders.csvfile import csv_errors, open_text
from selfalign.loaders.report import ImportReport
from selfalign.survey import CountryAnswers, Question, Survey

COUNTRY_COLUMN = "B_COUNTRY_ALPHA"
WEIGHT_COLUMN = "W_WEIGHT"
QUESTION_COLUMN = re.compile(r"^Q\d+[A-Z]?$")


def _sniff_delimiter(first_line: str) -> str:
    return ";" if first_line.count(";") > first_line.count(",") else ","


def read_wvs_microdata(
    paths: Sequence[str | Path], base: Survey, *, name: str = "wvs-import", report: ImportReport | None = None
) -> Survey:
    """Read one or more WVS respondent-level CSV files into a survey of weighted per-country shares.

    ``base`` supplies the questions (wording, options, topics, binary splits) for the ``Q…`` columns.
    Raises :class:`SurveyFormatError` naming the file, line and problem; respondents whose country code
    cannot be mapped are skipped and recorded in ``report``.
    """
    report = report if report is not None else ImportReport()
    resolved: dict[str, CountryMatch | None] = {}
    names: dict[str, str] = {}
    # (country, qid) -> code -> weight sum ; (country, qid) -> respondents
    weights: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[tuple[str, str], int] = defaultdict(int)
    any_weighted = True
    used_questions: dict[str, Question] = {}
    for raw_path in paths:
        path = Path(raw_path)
        with open_text(path) as handle:
            first = handle.readline()
            if not first.strip():
                raise SurveyFormatError(path, "file is empty")
            handle.seek(0)
            if handle.read(1) != "\ufeff":
                handle.seek(0)
            reader = csv.reader(handle, delimiter=_sniff_delimiter(first))
            with csv_errors(path, reader):
                header = [h.strip().strip('"') for h in next(reader)]
                if COUNTRY_COLUMN not in header:
                    raise SurveyFormatError(path, f"missing column {COUNTRY_COLUMN} (the respondent's country)", 1)
                country_at = header.index(COUNTRY_COLUMN)
                weight_at = header.index(WEIGHT_COLUMN) if WEIGHT_COLUMN in header else None
                if weight_at is None:
                    any_weighted = False
                columns = [
                    (i, h) for i, h in enumerate(header) if QUESTION_COLUMN.match(h) and h in base.questions_by_id
                ]
                if not columns:
                    raise SurveyFormatError(path, f"no Q... columns known to survey {base.name}", 1)
                for _, qid in columns:
                    used_questions[qid] = base.questions_by_id[qid]
                for line, row in enumerate(reader, start=2):
                    if not row:
                        continue
                    if len(row) != len(header):
                        raise SurveyFormatError(path, f"expected {len(header)} fields, found {len(row)}", line)
                    country_text = row[country_at].strip()
                    if not country_text:
                        raise SurveyFormatError(path, f"empty {COUNTRY_COLUMN}", line)
                    if country_text not in resolved:
                        resolved[country_text] = match_country(country_text)
                    match = resolved[country_text]
                    if match is None:
                        report.skip_respondent(path, line, country_text)
                        continue
                    country = match.code
                    names.setdefault(country, match.name)
                    weight = 1.0
                    if weight_at is not None:
                        try:
                            weight = float(row[weight_at])
                        except ValueError:
                            raise SurveyFormatError(
                                path, f"{WEIGHT_COLUMN} {row[weight_at]!r} is not a number", line
                            ) from None
                        if weight < 0:
                            raise SurveyFormatError(path, f"{WEIGHT_COLUMN} is negative ({weight})", line)
                    for i, qid in columns:
                        value = row[i].strip()
                        if not value:
                            continue
                        try:
                            code_number = float(value)
                        except ValueError:
                            raise SurveyFormatError(path, f"{qid} value {value!r} is not a number", line) from None
                        if code_number < 0:
                            continue  # negative codes: don't know / no answer / not asked / missing
                        code = str(int(code_number)) if code_number.is_integer() else value
                        question = used_questions[qid]
                        if code not in question.option_codes:
                            raise SurveyFormatError(
                                path,
                                f"{qid} code {code} is not among its options {list(question.option_codes)[:12]}",
                                line,
                            )
                        weights[(country, qid)][code] += weight
                        counts[(country, qid)] += 1
    answers: list[CountryAnswers] = []
    for (country, qid), by_code in sorted(weights.items()):
        total = sum(by_code.values())
        if total <= 0:
            continue
        order = used_questions[qid].option_codes
        shares = {c: by_code[c] / total for c in order if c in by_code}
        answers.append(
            CountryAnswers(
                country,
                qid,
                shares,
                counts[(country, qid)],
                any_weighted,
                "WVS respondent-level data" + (", weighted with W_WEIGHT" if any_weighted else ", unweighted"),
            )
        )
    if not answers:
        summary = report.summary(hints=False)
        raise SurveyFormatError(paths[0], "no substantive answers found" + (f" ({summary})" if summary else ""))
    questions = [q for q in base.questions if q.id in used_questions]
    countries = sorted({a.country for a in answers})
    return Survey.build(
        name,
        questions,
        answers,
        country_names={c: names[c] for c in countries},
        languages=base.languages_info.values(),
        metadata={"title": f"Imported from WVS respondent-level data ({len(paths)} file(s))", "base_survey": base.name},
        native_languages={c: base.native_languages.get(c, "") for c in countries},
    )
