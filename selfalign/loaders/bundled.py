"""The bundled survey format: a folder of plain, diffable files.

```
<name>/
  survey.toml          name, title, citation, languages (with how each was produced), sources
  questions.jsonl      one question per line: id, topic, scale, battery, option codes, binary split
  text/<lang>.jsonl    one question per line: wording, option labels and binary statement in <lang>
  answers.csv          country,question_id,option_code,share,n_respondents,weighted,source
  countries.csv        code,name,language
```
See ``surveys/README.md`` for the full description.
"""

from __future__ import annotations

import csv
import json
import math
import re
import tomllib
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from selfalign.errors import SelfAlignError, SurveyFormatError
from selfalign.loaders.csvfile import csv_errors, csv_rows, open_text, read_text
from selfalign.loaders.publish import publish
from selfalign.survey import (
    BinarySplit,
    CountryAnswers,
    LanguageInfo,
    Option,
    Question,
    ScaleKind,
    Survey,
)

ANSWER_COLUMNS = ("country", "question_id", "option_code", "share", "n_respondents", "weighted", "source")
COUNTRY_COLUMNS = ("code", "name", "language")
OVERLAY_META_SUFFIX = ".meta.toml"
COUNTRY_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.exists():
        raise SurveyFormatError(path, "file is missing")
    rows: list[tuple[int, dict[str, Any]]] = []
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise SurveyFormatError(
                    path, f"not valid JSON ({getattr(exc, 'msg', 'nested too deep')})", number
                ) from None
            if not isinstance(record, dict) or "id" not in record:
                raise SurveyFormatError(path, "each line must be a JSON object with an 'id'", number)
            rows.append((number, record))
    if not rows:
        raise SurveyFormatError(path, "file is empty")
    return rows


def _read_text_file(path: Path, structure: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Read one language's wordings and check they match the questions' structure exactly."""
    texts: dict[str, dict[str, Any]] = {}
    for number, record in _read_jsonl(path):
        qid = str(record["id"])
        if qid in texts:
            raise SurveyFormatError(path, f"duplicate question id {qid}", number)
        spec = structure.get(qid)
        if spec is None:
            raise SurveyFormatError(path, f"question {qid} is not in questions.jsonl", number)
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise SurveyFormatError(path, f"question {qid} has no wording", number)
        labels = record.get("options")
        if not isinstance(labels, dict):
            raise SurveyFormatError(path, f"question {qid}: 'options' must map option codes to labels", number)
        codes = [str(c) for c in spec["options"]]
        if list(map(str, labels)) != codes:
            raise SurveyFormatError(
                path,
                f"question {qid}: option codes {list(labels)[:12]} differ from the source's {codes[:12]}"
                f" ({len(labels)} vs {len(codes)} options)",
                number,
            )
        if any(not isinstance(v, str) or not v.strip() for v in labels.values()):
            raise SurveyFormatError(path, f"question {qid}: an option label is empty", number)
        statement = record.get("statement")
        if spec.get("binary") and (not isinstance(statement, str) or not statement.strip()):
            raise SurveyFormatError(path, f"question {qid} has a binary split but no statement", number)
        texts[qid] = {"question": question, "options": labels, "statement": statement, "_line": number}
    missing = [qid for qid in structure if qid not in texts]
    if missing:
        raise SurveyFormatError(
            path, f"missing questions: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else "")
        )
    return texts


def _parse_bool(value: str, path: Path, line: int) -> bool:
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise SurveyFormatError(path, f"'weighted' must be true or false, got {value!r}", line)


def _read_answers(path: Path, questions: dict[str, Question]) -> list[CountryAnswers]:
    if not path.exists():
        raise SurveyFormatError(path, "file is missing")
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    valid_countries: set[str] = set()
    with open_text(path) as handle, csv_errors(path, reader := csv.reader(handle)):
        header = next(reader, None)
        if header is None:
            raise SurveyFormatError(path, "file is empty")
        missing = [c for c in ANSWER_COLUMNS[:4] if c not in header]
        if missing:
            raise SurveyFormatError(path, f"missing columns {missing}; expected {list(ANSWER_COLUMNS)}", 1)
        idx = {name: header.index(name) for name in ANSWER_COLUMNS if name in header}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise SurveyFormatError(path, f"expected {len(header)} fields, found {len(row)}", line)
            country, qid, code = row[idx["country"]], row[idx["question_id"]], row[idx["option_code"]]
            question = questions.get(qid)
            if question is None:
                raise SurveyFormatError(path, f"unknown question {qid!r}", line)
            if code not in question.option_code_set:
                raise SurveyFormatError(
                    path, f"option code {code!r} is not among {qid}'s options {list(question.option_codes)[:12]}", line
                )
            try:
                share = float(row[idx["share"]])
            except ValueError:
                raise SurveyFormatError(path, f"share {row[idx['share']]!r} is not a number", line) from None
            if math.isnan(share) or share < 0 or share > 1 + 1e-9:
                raise SurveyFormatError(path, f"share {share} is outside [0, 1]", line)
            group = groups.get((country, qid))
            if group is None:
                if country not in valid_countries:
                    if not COUNTRY_CODE.match(country):  # codes appear in paths, lists and program names
                        raise SurveyFormatError(
                            path,
                            f"country {country!r} is not a code (letters, digits, '.', '_', '-': IND.old_national)",
                            line,
                        )
                    valid_countries.add(country)
                n_text = row[idx["n_respondents"]].strip() if "n_respondents" in idx else ""
                try:
                    n = int(float(n_text)) if n_text else None
                except ValueError:
                    raise SurveyFormatError(path, f"n_respondents {n_text!r} is not a number", line) from None
                weighted = _parse_bool(row[idx["weighted"]], path, line) if "weighted" in idx else True
                source = row[idx["source"]] if "source" in idx else ""
                group = {"shares": {}, "n": n, "weighted": weighted, "source": source, "line": line}
                groups[(country, qid)] = group
            if code in group["shares"]:
                raise SurveyFormatError(path, f"duplicate row for {country}/{qid} option {code}", line)
            group["shares"][code] = share
    if not groups:
        raise SurveyFormatError(path, "no answer rows")
    answers: list[CountryAnswers] = []
    for (country, qid), group in groups.items():
        total = sum(group["shares"].values())
        if abs(total - 1.0) > 1e-6:
            raise SurveyFormatError(
                path, f"shares of {country}/{qid} sum to {total:.9f}, not 1 (within 1e-6)", group["line"]
            )
        order = questions[qid].option_codes
        shares = {c: group["shares"][c] for c in order if c in group["shares"]}
        answers.append(CountryAnswers(country, qid, shares, group["n"], group["weighted"], group["source"]))
    return answers


def _read_countries(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    names: dict[str, str] = {}
    languages: dict[str, str] = {}
    if not path.exists():
        return names, languages
    with csv_rows(path, COUNTRY_COLUMNS[:2], str(list(COUNTRY_COLUMNS))) as rows:
        for line, row in rows:
            code = (row.get("code") or "").strip()
            if not code:
                raise SurveyFormatError(path, "empty country code", line)
            names[code] = (row.get("name") or code).strip()
            if row.get("language"):
                languages[code] = row["language"].strip()
    return names, languages


def _language_info(lang: str, info: dict[str, Any]) -> LanguageInfo:
    return LanguageInfo(
        code=lang,
        name=str(info.get("name", lang)),
        agree=str(info.get("agree", "agree")),
        disagree=str(info.get("disagree", "disagree")),
        produced=str(info.get("produced", "")),
        checked=str(info.get("checked", "")),
        machine_translated=bool(info.get("machine_translated", False)),
    )


def overlay_languages(overlay_dir: Path) -> dict[str, tuple[Path, Path]]:
    """Complete overlay languages in ``overlay_dir``: code -> (meta file, text file).

    A language is complete when its ``<code>.meta.toml`` exists (translate writes it last); a
    ``<code>.jsonl`` without one (e.g. a ``<code>.partial.jsonl``) is ignored.
    """
    found: dict[str, tuple[Path, Path]] = {}
    if not overlay_dir.is_dir():
        return found
    for meta in sorted(overlay_dir.glob(f"*{OVERLAY_META_SUFFIX}")):
        lang = meta.name[: -len(OVERLAY_META_SUFFIX)]
        found[lang] = (meta, overlay_dir / f"{lang}.jsonl")
    return found


def _read_overlay_meta(path: Path, lang: str) -> dict[str, Any]:
    if not LANGUAGE_CODE.match(lang):
        raise SurveyFormatError(path, f"{lang!r} is not a language code (e.g. 'fr', 'pt-BR')")
    try:
        info = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise SurveyFormatError(path, f"not valid TOML ({exc})") from None
    for key in ("name", "agree", "disagree"):
        if not isinstance(info.get(key), str) or not info[key].strip():
            raise SurveyFormatError(path, f"'{key}' must be a non-empty string")
    return info


def load_bundled(
    folder: str | Path, *, overlay_dir: str | Path | None = None, skip_languages: Collection[str] = ()
) -> Survey:
    """Load a survey folder in the bundled format, validating every file.

    ``overlay_dir``: a folder of extra languages (``<code>.jsonl`` + ``<code>.meta.toml``, as written by
    ``selfalign translate``), validated exactly like the folder's own language files; a language the folder
    already has is taken from the folder. ``skip_languages`` are left out.
    """
    root = Path(folder)
    meta_path = root / "survey.toml"
    if not meta_path.exists():
        raise SurveyFormatError(meta_path, "file is missing (not a survey folder)")
    try:
        meta = tomllib.loads(read_text(meta_path))
    except tomllib.TOMLDecodeError as exc:
        raise SurveyFormatError(meta_path, f"not valid TOML ({exc})") from None
    name = str(meta.get("name") or root.name)
    languages_meta: dict[str, dict[str, Any]] = meta.get("languages") or {"en": {"name": "English"}}
    if not isinstance(languages_meta, dict) or not all(isinstance(v, dict) for v in languages_meta.values()):
        raise SurveyFormatError(meta_path, "'languages' must be a table of [languages.<code>] tables")
    bad = [lang for lang in languages_meta if not LANGUAGE_CODE.match(lang)]
    if bad:
        raise SurveyFormatError(meta_path, f"{bad[0]!r} is not a language code (e.g. 'en', 'pt-BR')")

    structure_path = root / "questions.jsonl"
    structure: dict[str, dict[str, Any]] = {}
    for number, record in _read_jsonl(structure_path):
        qid = str(record["id"])
        if qid in structure:
            raise SurveyFormatError(structure_path, f"duplicate question id {qid}", number)
        for key in ("topic", "options"):
            if key not in record:
                raise SurveyFormatError(structure_path, f"question {qid} lacks '{key}'", number)
        if not isinstance(record["options"], list) or len(record["options"]) < 2:
            raise SurveyFormatError(structure_path, f"question {qid}: 'options' must list >= 2 codes", number)
        split = record.get("binary")
        if split and (
            not isinstance(split, dict) or not all(isinstance(split.get(k, []), list) for k in ("agree", "disagree"))
        ):
            raise SurveyFormatError(
                structure_path,
                f'question {qid}: \'binary\' must be {{"agree": [...], "disagree": [...]}}',
                number,
            )
        record["_line"] = number
        structure[qid] = record

    texts_by_lang: dict[str, dict[str, dict[str, Any]]] = {}
    infos: list[LanguageInfo] = []
    for lang, info in languages_meta.items():
        if lang in skip_languages:
            continue
        texts_by_lang[lang] = _read_text_file(root / "text" / f"{lang}.jsonl", structure)
        infos.append(_language_info(lang, info))
    if overlay_dir is not None:
        for lang, (meta_file, text_file) in overlay_languages(Path(overlay_dir)).items():
            if lang in languages_meta or lang in skip_languages:
                continue
            info = _read_overlay_meta(meta_file, lang)
            texts_by_lang[lang] = _read_text_file(text_file, structure)
            infos.append(_language_info(lang, info))

    questions: dict[str, Question] = {}
    for qid, spec in structure.items():
        codes = [str(c) for c in spec["options"]]
        options = tuple(
            Option(code, {lang: str(texts_by_lang[lang][qid]["options"][code]) for lang in texts_by_lang})
            for code in codes
        )
        binary = None
        split = spec.get("binary")
        if split:
            binary = BinarySplit(
                statements={lang: str(texts_by_lang[lang][qid]["statement"]) for lang in texts_by_lang},
                agree_codes=tuple(str(c) for c in split.get("agree", ())),
                disagree_codes=tuple(str(c) for c in split.get("disagree", ())),
            )
        try:
            scale = ScaleKind(spec.get("scale", "ordinal"))
            questions[qid] = Question(
                id=qid,
                topic=str(spec["topic"]),
                scale=scale,
                options=options,
                texts={lang: str(texts_by_lang[lang][qid]["question"]) for lang in texts_by_lang},
                binary=binary,
                binary_skip_reason=spec.get("binary_skip_reason"),
                battery=spec.get("battery"),
                probe=bool(spec.get("probe", True)),
                note=spec.get("note"),
            )
        except (ValueError, SelfAlignError) as exc:
            raise SurveyFormatError(structure_path, f"question {qid}: {exc}", spec["_line"]) from None

    answers = _read_answers(root / "answers.csv", questions)
    names, native = _read_countries(root / "countries.csv")
    public_meta = {k: v for k, v in meta.items() if k not in {"languages"}}
    public_meta["path"] = str(root)
    try:
        return Survey.build(
            name,
            questions.values(),
            answers,
            country_names=names,
            languages=infos,
            metadata=public_meta,
            native_languages=native,
        )
    except SelfAlignError as exc:
        raise SurveyFormatError(root, str(exc)) from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _write_toml(meta: dict[str, Any], path: Path) -> None:
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in meta.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        flat = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if flat:
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in flat.items())
        for sub, values in nested.items():
            lines.append(f"\n[{key}.{sub}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_bundled(survey: Survey, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``survey`` as a bundled-format folder, atomically: a failure leaves nothing behind.

    The folder is written next to its destination under a temporary name, loaded back to validate it,
    and only then renamed into place (:func:`selfalign.loaders.publish.publish`). The folder's name must be
    a plain name; ``overwrite`` replaces only a survey folder of that name (or of ``survey.name``).
    Problems (a full disk, a read-only folder, an existing folder that is not a survey) raise one-line
    :class:`SurveyFormatError`.
    """
    target = Path(folder)
    return publish(
        target, lambda staging: _write_files(survey, staging, target), overwrite=overwrite, also_named=survey.name
    )


def _write_files(survey: Survey, staging: Path, target: Path) -> None:
    """Write the survey's files into the (empty) ``staging`` folder and check that they load back."""
    meta: dict[str, Any] = {
        k: v for k, v in survey.metadata.items() if k not in {"path", "languages"} and v is not None
    }
    meta["name"] = survey.name
    meta["languages"] = {
        code: {
            "name": info.name,
            "agree": info.agree,
            "disagree": info.disagree,
            "produced": info.produced,
            "checked": info.checked,
            "machine_translated": info.machine_translated,
        }
        for code, info in survey.languages_info.items()
    }
    _write_toml(meta, staging / "survey.toml")
    structure = []
    for q in survey.questions:
        structure.append(
            {
                "id": q.id,
                "topic": q.topic,
                "scale": q.scale.value,
                "battery": q.battery,
                "options": list(q.option_codes),
                "binary": (
                    {"agree": list(q.binary.agree_codes), "disagree": list(q.binary.disagree_codes)}
                    if q.binary
                    else None
                ),
                "binary_skip_reason": q.binary_skip_reason,
                "probe": q.probe,
                "note": q.note,
            }
        )
    (staging / "questions.jsonl").write_text(_jsonl(structure), encoding="utf-8")
    (staging / "text").mkdir()
    for lang in survey.languages:
        records = [
            {
                "id": q.id,
                "question": q.text(lang),
                "options": {o.code: o.label(lang) for o in q.options},
                "statement": q.binary.statement(lang) if q.binary else None,
            }
            for q in survey.questions
        ]
        (staging / "text" / f"{lang}.jsonl").write_text(_jsonl(records), encoding="utf-8")
    with (staging / "answers.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(ANSWER_COLUMNS)
        for (country, qid), ans in sorted(survey.answers.items()):
            n = "" if ans.n_respondents is None else str(ans.n_respondents)
            for code, share in ans.shares.items():
                writer.writerow(
                    [
                        country,
                        qid,
                        code,
                        format(float(share), ".12g"),
                        n,
                        "true" if ans.weighted else "false",
                        ans.source,
                    ]
                )
    with (staging / "countries.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COUNTRY_COLUMNS)
        for code in survey.countries:
            writer.writerow([code, survey.country_names[code], survey.native_languages.get(code, "")])
    try:
        load_bundled(staging)  # validate before publishing
    except SurveyFormatError as exc:
        raise SurveyFormatError(target, f"the written survey does not load back ({exc}); nothing was changed") from None
