"""The bundled WVS-7 survey: real figures, project wordings, data-model behaviour."""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json

import pytest

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.survey import CountryAnswers, Option, Question, ScaleKind


def test_counts(wvs7):
    assert len(wvs7.countries) == 57
    assert len(wvs7.questions) == 260
    assert len(wvs7.topics) == 13
    binary = [q for q in wvs7.questions if q.supports("binary")]
    assert 240 <= len(binary) <= 259
    assert not wvs7.question("Q223").probe  # party lists differ per country


def test_family_very_important_to_a_majority_everywhere(wvs7):
    for country in wvs7.countries:
        if wvs7.has_answers(country, "Q1"):
            assert wvs7.majority_option(country, "Q1") == "1", country
            assert wvs7.distribution(country, "Q1").share("1") >= 0.74 - 1e-9, country


def test_trust_netherlands_above_zimbabwe(wvs7):
    nld = wvs7.distribution("Netherlands", "Q57").share("1")
    zwe = wvs7.distribution("ZWE", "Q57").share("1")
    assert nld > 0.5 > 0.1 > zwe
    assert wvs7.majority_side("NLD", "Q57") == "agree"
    assert wvs7.majority_side("zimbabwe", "Q57") == "disagree"


def test_every_distribution_sums_to_one(wvs7):
    for (country, qid), answers in wvs7.answers.items():
        assert abs(sum(answers.shares.values()) - 1) < 1e-9, (country, qid)
        assert set(answers.shares) <= set(wvs7.question(qid).option_codes)


def test_every_question_has_topic_wording_and_labels(wvs7):
    for q in wvs7.questions:
        assert q.topic in wvs7.topics
        for lang in wvs7.languages:
            assert q.text(lang).strip()
            assert all(label.strip() for label in q.option_labels(lang))
            if q.binary:
                assert q.binary.statement(lang).strip()
        if not q.supports("binary") and q.probe:
            assert q.binary_skip_reason, q.id


def test_weighting_and_sources_recorded(wvs7):
    deu = wvs7.distribution("DEU", "Q57")
    assert deu.weighted and deu.n_respondents and deu.n_respondents > 1000
    usa = wvs7.distribution("USA", "Q57")
    assert not usa.weighted and usa.n_respondents is None


def test_no_bundled_wording_copies_the_reference(wvs7, shared_wvs7):
    reference: set[str] = set()
    for row in csv.DictReader((shared_wvs7 / "questions.csv").open(encoding="utf-8")):
        reference.update({row["question_text_wvb"].strip().lower(), row["codebook_label"].strip().lower()})
    by_lang: dict[str, dict[str, str]] = {}
    for row in csv.DictReader((shared_wvs7 / "translations.csv").open(encoding="utf-8")):
        reference.add(row["question_text"].strip().lower())
        by_lang.setdefault(row["lang"], {})[row["question_id"]] = row["question_text"].strip().lower()
    for q in wvs7.questions:
        for lang in wvs7.languages:
            texts = [q.text(lang)] + ([q.binary.statement(lang)] if q.binary else [])
            for text in texts:
                assert text.strip().lower() not in reference, (q.id, lang, text)
            ref = by_lang.get(lang, {}).get(q.id)
            if ref:
                ratio = difflib.SequenceMatcher(None, q.text(lang).lower(), ref).ratio()
                assert ratio < 0.9, (q.id, lang, ratio)


def test_reference_figures_carried_over_exactly(wvs7, shared_wvs7):
    with (shared_wvs7 / "country_distributions.csv").open(encoding="utf-8") as handle:
        for n, row in enumerate(csv.DictReader(handle)):
            if n % 97:  # a spread sample of rows
                continue
            share = wvs7.distribution(row["country_iso3"], row["question_id"]).share(row["option_code"])
            assert share == pytest.approx(float(row["share"]), abs=1e-9)


def test_survey_is_immutable(wvs7):
    q = wvs7.question("Q1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.topic = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        wvs7.questions_by_id["Q1"] = q  # type: ignore[index]
    with pytest.raises(TypeError):
        wvs7.distribution("DEU", "Q1").shares["1"] = 0.5  # type: ignore[index]


def test_queries(wvs7):
    religious = wvs7.questions_of_topic("religious values")
    assert {q.topic for q in religious} == {"Religious Values"}
    assert wvs7.resolve_country("germany") == wvs7.resolve_country("deu") == "DEU"
    assert wvs7.native_language("EGY") in {"ar", "en"}
    with pytest.raises(UnknownChoiceError, match="closest: Germany"):
        wvs7.resolve_country("Germny")
    with pytest.raises(UnknownChoiceError, match="unknown question 'Q999'"):
        wvs7.question("Q999")
    with pytest.raises(UnknownChoiceError, match="unknown topic"):
        wvs7.resolve_topic("astrology")
    with pytest.raises(UnknownChoiceError, match="unknown language 'xx'"):
        wvs7.resolve_language("xx")


def test_model_validation():
    options = (Option("1", {"en": "yes"}), Option("2", {"en": "no"}))
    with pytest.raises(SelfAlignError, match="sum to"):
        CountryAnswers("DEU", "Q1", {"1": 0.5, "2": 0.4})
    with pytest.raises(SelfAlignError, match="at least two options"):
        Question("Q", "t", ScaleKind.NOMINAL, options[:1], {"en": "?"})
    with pytest.raises(SelfAlignError, match="duplicate option codes"):
        Question("Q", "t", ScaleKind.NOMINAL, (options[0], options[0]), {"en": "?"})
    tie = CountryAnswers("DEU", "Q1", {"1": 0.5, "2": 0.5})
    assert tie.majority_option == "1"


def test_bundled_files_are_plain_and_diffable(wvs7):
    from selfalign.loaders import survey_path

    root = survey_path("wvs7")
    first = json.loads((root / "questions.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["id"] == "Q1" and first["options"] == ["1", "2", "3", "4"]
    header = (root / "answers.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "country,question_id,option_code,share,n_respondents,weighted,source"


@pytest.mark.parametrize(
    ("name", "code"),
    [("S. Korea", "KOR"), ("Korea, South", "KOR"), ("Czech Rep.", "CZE"), ("Britain", "GBR"),
     ("United Kingdom", "GBR"), ("Türkiye", "TUR"), ("Viet Nam", "VNM"), ("  nir ", "NIR")],
)  # fmt: skip
def test_resolve_country_takes_any_spelling_coco_knows(wvs7, name, code):
    assert wvs7.resolve_country(name) == code


def _sampled_survey():
    from selfalign.survey import Survey

    question = Question("Q", "t", ScaleKind.NOMINAL, (Option("1", {"en": "y"}), Option("2", {"en": "n"})), {"en": "?"})
    answers = [CountryAnswers(c, "Q", {"1": 0.5, "2": 0.5}) for c in ("IND.current_national", "IND.old_national")]
    names = {
        "IND.current_national": "India (Current national sample)",
        "IND.old_national": "India (Old national sample)",
    }
    return Survey.build("s", [question], answers, country_names=names)


def test_resolve_country_sample_variants(wvs7):
    with pytest.raises(UnknownChoiceError, match="survey wvs7 has India as IND"):
        wvs7.resolve_country("India (Old national sample)")
    survey = _sampled_survey()
    assert survey.resolve_country("ind.old_national") == "IND.old_national"
    assert survey.resolve_country("India (Current national sample)") == "IND.current_national"
    only_samples = r"has India as IND\.current_national, IND\.old_national"
    with pytest.raises(UnknownChoiceError, match=only_samples):
        survey.resolve_country("India")
    with pytest.raises(UnknownChoiceError, match="unknown country 'Foo \\[/\\] Bar'"):
        survey.resolve_country("Foo [/] Bar")


def test_loading_and_resolving_codes_never_loads_coco():
    import subprocess
    import sys

    code = (
        "import sys; from selfalign.loaders import load_survey; s = load_survey('wvs7');"
        "assert s.resolve_country('deu') == 'DEU' and s.resolve_country('Germany') == 'DEU';"
        "print(sorted(m for m in ('country_converter', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
