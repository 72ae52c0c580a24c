"""Build the bundled survey ``surveys/wvs7`` from the WVS-7 reference figures and the project's own wordings.

Inputs:
- ``../shared/data/wvs7/country_distributions.csv`` and ``questions.csv``: the FIGURES only (answer shares,
  respondent counts, option codes, topics, party names of Q223). No sentence from them is written out.
- ``tools/wvs7_text/en_part*.jsonl``: the project's English wordings, scale kinds, batteries, binary splits.
- ``tools/wvs7_text/<lang>.jsonl`` + ``<lang>.meta.toml``: the project's translations (question, options,
  statement per question) and how each language was produced and checked.

Run: ``python tools/build_wvs7.py [--shared ../shared/data/wvs7] [--out surveys/wvs7]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

from selfalign.countries import country_name, main_language
from selfalign.loaders.bundled import write_bundled
from selfalign.survey import BinarySplit, CountryAnswers, LanguageInfo, Option, Question, ScaleKind, Survey

ROOT = Path(__file__).resolve().parent.parent
TEXT_DIR = ROOT / "tools" / "wvs7_text"

SOURCES = {
    "DataSpi/spy-playground": (
        "wvs7-v5-weighted",
        "WVS-7 pooled data file v5.0, split per country, weighted with W_WEIGHT",
        True,
    ),
    "shaoyangxu/CultureSPA": (
        "wvs7-aggregate-unweighted",
        "WVS-7 published per-country aggregates, unweighted, renormalised over substantive answers",
        False,
    ),
    "yashdalvi221/llm_cultural_probe": (
        "wvs7-v6-india-weighted",
        "WVS-7 India country file v6.0, weighted",
        True,
    ),
    "ahmeterthacioglu/Cmpe492": (
        "wvs7-v5-turkey-weighted",
        "WVS-7 Turkey country file v5.0, weighted",
        True,
    ),
}

CITATION = (
    "Haerpfer, C., Inglehart, R., Moreno, A., Welzel, C., Kizilova, K., Diez-Medrano J., M. Lagos, P. Norris, "
    "E. Ponarin & B. Puranen (eds.). 2022. World Values Survey: Round Seven - Country-Pooled Datafile "
    "Version 5.0. Madrid, Spain & Vienna, Austria: JD Systems Institute & WVSA Secretariat. "
    "doi:10.14281/18241.20"
)


def _source_id(source: str) -> tuple[str, str, bool]:
    for prefix, value in SOURCES.items():
        if source.startswith(prefix):
            return value
    raise SystemExit(f"unknown source in reference data: {source!r}")


def load_english() -> dict[str, dict]:
    """The project's English wordings and structure, from en_part*.jsonl."""
    records: dict[str, dict] = {}
    for part in sorted(TEXT_DIR.glob("en_part*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                records[record["id"]] = record
    return records


def load_translations() -> dict[str, tuple[dict, dict[str, dict]]]:
    """Complete translations: lang -> (metadata, id -> record)."""
    found: dict[str, tuple[dict, dict[str, dict]]] = {}
    for meta_path in sorted(TEXT_DIR.glob("*.meta.toml")):
        lang = meta_path.name.split(".")[0]
        text_path = TEXT_DIR / f"{lang}.jsonl"
        if not text_path.exists():
            continue
        meta = tomllib.loads(meta_path.read_text(encoding="utf-8"))
        rows = {}
        for line in text_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                rows[record["id"]] = record
        found[lang] = (meta, rows)
    return found


def build(shared: Path) -> Survey:
    """Assemble the Survey object from the reference figures and the project's texts."""
    reference = {r["question_id"]: r for r in csv.DictReader((shared / "questions.csv").open(encoding="utf-8"))}
    english = load_english()
    missing = [q for q in reference if q not in english]
    if missing:
        raise SystemExit(f"English wordings missing for {len(missing)} questions: {missing[:10]}")
    translations = load_translations()

    shares: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    data_labels: dict[str, dict[str, str]] = defaultdict(dict)
    counts: dict[tuple[str, str], int | None] = {}
    sources: dict[tuple[str, str], tuple[str, str, bool]] = {}
    with (shared / "country_distributions.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            key = (row["country_iso3"], row["question_id"])
            shares[key][row["option_code"]] = float(row["share"])
            counts[key] = int(float(row["n_respondents"])) if row["n_respondents"] else None
            sources[key] = _source_id(row["source"])
            data_labels[row["question_id"]].setdefault(row["option_code"], row["option_label"])

    questions: list[Question] = []
    for qid, ref in reference.items():
        text = english[qid]
        ref_options: dict[str, str] = json.loads(ref["options"])
        if text["options"] == "FROM_SOURCE":
            # country-specific lists (party names): the union of the codebook's and the data's codes
            for code, label in data_labels[qid].items():
                ref_options.setdefault(code, label)
        codes = list(ref_options)
        en_labels = ref_options if text["options"] == "FROM_SOURCE" else text["options"]
        if list(en_labels) != codes:
            raise SystemExit(f"{qid}: English option codes {list(en_labels)} differ from reference {codes}")

        def labels_for(code: str, qid: str = qid, en_labels: dict = en_labels, text: dict = text) -> dict[str, str]:
            labels = {"en": en_labels[code]}
            for lang, (_, rows) in translations.items():
                if text["options"] == "FROM_SOURCE":
                    labels[lang] = en_labels[code]  # party names stay as they are
                else:
                    labels[lang] = rows[qid]["options"][code]
            return labels

        options = tuple(Option(code, labels_for(code)) for code in codes)
        texts = {"en": text["question"], **{lang: rows[qid]["question"] for lang, (_, rows) in translations.items()}}
        binary = None
        if text.get("statement"):
            statements = {"en": text["statement"]}
            statements.update({lang: rows[qid]["statement"] for lang, (_, rows) in translations.items()})
            binary = BinarySplit(statements, tuple(text["agree"]), tuple(text["disagree"]))
        questions.append(
            Question(
                id=qid,
                topic=ref["category"],
                scale=ScaleKind(text["scale"]),
                options=options,
                texts=texts,
                binary=binary,
                binary_skip_reason=text.get("binary_skip_reason"),
                battery=text.get("battery"),
                probe=bool(text.get("probe", True)),
                note=text.get("note"),
            )
        )

    answers = []
    for (country, qid), values in sorted(shares.items()):
        total = sum(values.values())
        # the reference sums to 1 within 1e-9; renormalise float noise only
        normalised = {c: v / total for c, v in values.items()}
        source_id, _, weighted = sources[(country, qid)]
        answers.append(CountryAnswers(country, qid, normalised, counts[(country, qid)], weighted, source_id))

    languages = [
        LanguageInfo(
            "en",
            "English",
            "agree",
            "disagree",
            produced="written by the selfalign authors in their own words from the meaning of each WVS item",
            checked="reviewed against the WVS-7 master questionnaire's meaning; no reference wording copied",
        )
    ]
    for lang, (meta, _) in translations.items():
        languages.append(
            LanguageInfo(
                lang,
                meta["name"],
                meta["agree"],
                meta["disagree"],
                produced=meta.get("produced", ""),
                checked=meta.get("checked", ""),
                machine_translated=bool(meta.get("machine_translated", False)),
            )
        )
    countries = sorted({c for c, _ in shares})
    metadata = {
        "title": "World Values Survey wave 7 (2017-2022): country-level answer shares",
        "description": (
            "57 countries x 260 questions in 13 topics. Figures from the WVS-7 data; question wordings, "
            "binary statements and translations written by the selfalign authors."
        ),
        "citation": CITATION,
        "terms": "WVS data may be used for non-profit purposes with citation of the data set (see surveys/README.md).",
        "sources": {sid: {"description": desc, "weighted": w} for sid, desc, w in SOURCES.values()},
    }
    return Survey.build(
        "wvs7",
        questions,
        answers,
        country_names={c: country_name(c) for c in countries},
        languages=languages,
        metadata=metadata,
        native_languages={c: main_language(c) or "" for c in countries},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data" / "wvs7")
    parser.add_argument("--out", type=Path, default=ROOT / "surveys" / "wvs7")
    args = parser.parse_args()
    survey = build(args.shared)
    write_bundled(survey, args.out, overwrite=True)
    print(f"wrote {args.out}: {survey!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
