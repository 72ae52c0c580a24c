"""Loaders and imports: hand-computed figures, CLI round trips, and every kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from selfalign.errors import SurveyFormatError, UnknownChoiceError
from selfalign.loaders import load_bundled, load_survey, survey_path, write_bundled
from selfalign.loaders.global_opinions import read_global_opinions
from selfalign.loaders.tidy import read_tidy
from selfalign.loaders.wvs_microdata import read_wvs_microdata

# --- WVS respondent-level data ------------------------------------------------------------------------

MICRODATA = (
    '\ufeff"B_COUNTRY_ALPHA";"W_WEIGHT";"Q57";"Q1";"A_YEAR"\n'
    '"DEU";2.0;1;1;2018\n'
    '"DEU";1.0;2;2;2018\n'
    '"DEU";0.5;1;-1;2018\n'
    '"DEU";3.0;-2;1;2018\n'
    '"NLD";1.0;1;1;2018\n'
    '"NLD";1.0;2;-5;2018\n'
)


def test_wvs_microdata_weighted_shares(tmp_path, wvs7):
    path = tmp_path / "wvs.csv"
    path.write_text(MICRODATA, encoding="utf-8")
    survey = read_wvs_microdata([path], wvs7, name="mini")
    deu57 = survey.distribution("DEU", "Q57")
    # Q57 in DEU: code 1 weights 2.0 + 0.5 = 2.5, code 2 weight 1.0; the -2 answer is missing -> 2.5/3.5, 1/3.5
    assert deu57.share("1") == pytest.approx(2.5 / 3.5)
    assert deu57.share("2") == pytest.approx(1.0 / 3.5)
    assert deu57.n_respondents == 3 and deu57.weighted
    deu1 = survey.distribution("DEU", "Q1")
    # Q1 in DEU: code 1 weights 2.0 + 3.0, code 2 weight 1.0, the -1 answer is missing
    assert deu1.share("1") == pytest.approx(5 / 6) and deu1.n_respondents == 3
    assert survey.distribution("NLD", "Q1").share("1") == pytest.approx(1.0)
    assert survey.question("Q57").text("en") == wvs7.question("Q57").text("en")


def test_wvs_microdata_comma_separated_unweighted(tmp_path, wvs7):
    path = tmp_path / "wvs.csv"
    path.write_text("B_COUNTRY_ALPHA,Q57\nDEU,1\nDEU,2\nDEU,2\n", encoding="utf-8")
    answers = read_wvs_microdata([path], wvs7).distribution("DEU", "Q57")
    assert answers.share("2") == pytest.approx(2 / 3) and not answers.weighted


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("W_WEIGHT;Q57\n1;1\n", "missing column B_COUNTRY_ALPHA"),
        ("B_COUNTRY_ALPHA;W_WEIGHT;Q57\nDEU;x;1\n", ":2: W_WEIGHT 'x' is not a number"),
        ("B_COUNTRY_ALPHA;W_WEIGHT;Q57\nDEU;1;7\n", ":2: Q57 code 7 is not among its options"),
        ("B_COUNTRY_ALPHA;W_WEIGHT;Q57\nDEU;1\n", ":2: expected 3 fields"),
    ],
)
def test_wvs_microdata_bad_input(tmp_path, wvs7, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SurveyFormatError, match=message):
        read_wvs_microdata([path], wvs7)


# --- GlobalOpinionQA -----------------------------------------------------------------------------------

GOQA = (
    "question,selections,options,source\n"
    '"Is it necessary to believe in God to be moral?","defaultdict(<class \'list\'>, '
    "{'Belgium': [0.21, 0.79], 'Brazil': [0.8, 0.2]})\",\"['Yes', 'No']\",GAS\n"
    "\"How good is the economy?\",\"defaultdict(<class 'list'>, {'Germany': [0.1, 0.5, 0.3, 0.1]})\","
    "\"['Very good', 'Somewhat good', 'Somewhat bad', 'Very bad']\",GAS\n"
)


def test_global_opinions(tmp_path):
    path = tmp_path / "goqa.csv"
    path.write_text(GOQA, encoding="utf-8")
    survey = read_global_opinions(path, name="goqa")
    assert survey.countries == ("BEL", "BRA", "DEU")
    q1 = survey.questions[0]
    assert q1.option_labels("en") == ("Yes", "No") and q1.topic == "GAS"
    assert survey.distribution("Belgium", q1.id).share("2") == pytest.approx(0.79)
    assert survey.majority_option("BRA", q1.id) == "1"
    assert survey.distribution("Germany", survey.questions[1].id).share("2") == pytest.approx(0.5)


# As published: one question per row, `selections` a defaultdict repr, names as the source writes them.
PUBLISHED = (
    "question,selections,options,source\n"
    "\"Should the state fund the arts?\",\"defaultdict(<class 'list'>, {'S. Korea': [0.3, 0.7], 'Czech Rep.': "
    "[0.6, 0.4], 'Britain': [0.5, 0.5], 'India (Current national sample)': [0.8, 0.2], 'India (Old national sample)'"
    ": [0.7, 0.3], 'Palest. ter.': [0.4, 0.6], 'China': [0.0, 0.0], 'Albania': [0.55, 0.44]})\",\"['Yes', 'No']\",GAS\n"
    "\"Is the economy good?\",\"defaultdict(<class 'list'>, {'South Korea': [0.1, 0.9], 'Czechia': [0.2, 0.8], "
    "'Great Britain': [0.35, 0.65], 'Albania': [0.5, 0.5], 'Japan': [0.5], 'Mexico': [nan, 0.5]})\","
    "\"['Good', 'Bad']\",GAS\n"
    "\"Broken row?\",\"defaultdict(<class 'list'>, {'Chile': [0.5, \",\"['a', 'b']\",GAS\n"
)


def test_global_opinions_as_published_skips_unusable_pairs(tmp_path):
    from selfalign.loaders.report import ImportReport

    path = tmp_path / "goqa.csv"
    path.write_text(PUBLISHED, encoding="utf-8")
    report = ImportReport()
    survey = read_global_opinions(path, name="goqa", report=report)
    # one code per country whatever the spelling; samples kept apart; nothing invented
    assert survey.countries == ("ALB", "CZE", "GBR", "IND.current_national", "IND.old_national", "KOR")
    assert survey.country_names["IND.old_national"] == "India (Old national sample)"
    first, second = (q.id for q in survey.questions)
    assert survey.distribution("S. Korea", first).share("1") == pytest.approx(0.3)
    assert survey.distribution("South Korea", second).share("2") == pytest.approx(0.9)
    assert survey.distribution("ALB", first).share("1") == pytest.approx(0.55 / 0.99)  # rounding renormalised
    assert report.pairs_seen == 14 and len(report.rows_skipped) == 1
    reasons = sorted((s.country, s.reason) for s in report.skipped)
    assert reasons == [
        ("China", "shares are all zero"),
        ("Japan", "1 shares for 2 options"),
        ("Mexico", "a share is NaN or infinite"),
        ("Palest. ter.", "country name cannot be mapped to a code"),
    ]
    assert dict(report.unmapped) == {"Palest. ter.": 1}
    assert report.merged_names["KOR"] == ["S. Korea", "South Korea"]
    assert report.merged_names["GBR"] == ["Britain", "Great Britain"]
    summary = report.summary()
    assert summary.startswith("skipped 4 of 14 (country, question) pairs (") and "'Palest. ter.'" in summary
    assert "unreadable row" in summary and "\n" not in summary


def test_global_opinions_strict_refuses_at_the_first_unusable_pair(tmp_path):
    from selfalign.loaders.report import ImportReport

    path = tmp_path / "goqa.csv"
    path.write_text(PUBLISHED, encoding="utf-8")
    with pytest.raises(SurveyFormatError, match=r"goqa\.csv:2: country name 'Palest\. ter\.' cannot be mapped"):
        read_global_opinions(path, report=ImportReport(strict=True))


def test_global_opinions_sample_variants(tmp_path):
    from selfalign.loaders.report import ImportReport

    path = tmp_path / "goqa.csv"
    path.write_text(PUBLISHED, encoding="utf-8")
    merged_report = ImportReport()
    merged = read_global_opinions(path, sample_variants="merge", report=merged_report)
    assert "IND" not in merged.countries  # the two India samples compete in the one question: both skipped
    assert sum("IND is given twice" in s.reason for s in merged_report.skipped) == 2
    dropped_report = ImportReport()
    dropped = read_global_opinions(path, sample_variants="drop", report=dropped_report)
    assert not [c for c in dropped.countries if c.startswith("IND")]
    assert sum(dropped_report.dropped_samples.values()) == 2 and not dropped_report.unmapped.get("India")


def test_global_opinions_literals_are_parsed_never_evaluated(tmp_path):
    from selfalign.loaders.global_opinions import parse_literal

    assert parse_literal("defaultdict(<class 'list'>, {'A': [0.5, -0.5, nan]})")["A"][:2] == [0.5, -0.5]
    marker = tmp_path / "pwned"
    for text in (f"__import__('pathlib').Path('{marker}').touch()", "{'A': (lambda: 1)()}", "[" * 5000, "{**x}"):
        with pytest.raises(ValueError):
            parse_literal(text)
    assert not marker.exists()


def test_cli_global_opinions_summary_and_verbose(cli, tmp_path):
    path = tmp_path / "goqa.csv"
    path.write_text(PUBLISHED, encoding="utf-8")
    out = tmp_path / "out"
    result = cli("surveys", "import", "global-opinions", str(path), "--name", "g", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2 and lines[0].startswith("imported 2 questions x 6 countries")
    assert lines[1].startswith("skipped 4 of 14 (country, question) pairs")
    verbose = cli("surveys", "import", "global-opinions", str(path), "--name", "g", "--out", str(out), "--force", "-v")
    assert verbose.exit_code == 0
    assert "China/GOQA00001: shares are all zero" in verbose.output
    assert "country KOR <- 'S. Korea', 'South Korea'" in verbose.output
    assert "ALBANIA" not in verbose.output and "PALEST_TER" not in verbose.output
    strict = cli("surveys", "import", "global-opinions", str(path), "--name", "h", "--out", str(out), "--strict")
    assert strict.exit_code == 2 and "(--strict)" in strict.output and not (out / "h").exists()


# --- tidy ----------------------------------------------------------------------------------------------

QUESTIONS_CSV = (
    "question_id,question,options,topic,scale,statement,agree,disagree\n"
    'T1,Do you like tea?,"{""1"": ""Yes"", ""2"": ""No""}",Food,nominal,I like tea.,"[""1""]","[""2""]"\n'
    'T2,How happy are you?,"{""1"": ""Very"", ""2"": ""Quite"", ""3"": ""Not""}",Life,ordinal,,,\n'
)


def _write_tidy(tmp_path: Path, answers: str) -> tuple[Path, Path]:
    (tmp_path / "q.csv").write_text(QUESTIONS_CSV, encoding="utf-8")
    (tmp_path / "a.csv").write_text(answers, encoding="utf-8")
    return tmp_path / "a.csv", tmp_path / "q.csv"


def test_tidy(tmp_path):
    answers, questions = _write_tidy(
        tmp_path,
        "country,question_id,option_code,share\nDEU,T1,1,0.25\nDEU,T1,2,0.75\nJapan,T2,1,0.2\nJapan,T2,2,0.3\n"
        "Japan,T2,3,0.5\n",
    )
    survey = read_tidy(answers, questions, name="tidy")
    assert survey.majority_side("DEU", "T1") == "disagree"
    assert survey.distribution("JPN", "T2").share("3") == pytest.approx(0.5)
    assert survey.question("T2").binary is None and survey.question("T2").scale.value == "ordinal"


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ("", "empty"),
        ("country,question_id,share\n", "missing columns \\['option_code'\\]"),
        ("country,question_id,option_code,share\nDEU,T1,1,0.5\nDEU,T1,2,0.4\n", ":2: shares of DEU/T1 sum to"),
        ("country,question_id,option_code,share\nDEU,T1,9,1.0\n", ":2: option code '9' is not among"),
        ("country,question_id,option_code,share\nDEU,T1,1,abc\n", ":2: share 'abc' is not a number"),
        ("country,question_id,option_code,share\nDEU,T9,1,1.0\n", ":2: question 'T9' is not in"),
        ("country,question_id,option_code,share\nDEU,T1,1,0.5\nDEU,T1,1,0.5\n", ":3: duplicate row"),
    ],
)
def test_tidy_bad_input(tmp_path, answers, message):
    a, q = _write_tidy(tmp_path, answers)
    with pytest.raises(SurveyFormatError, match=message):
        read_tidy(a, q)


def test_tidy_duplicate_question_ids(tmp_path):
    (tmp_path / "q.csv").write_text(QUESTIONS_CSV + QUESTIONS_CSV.splitlines()[1] + "\n", encoding="utf-8")
    (tmp_path / "a.csv").write_text("country,question_id,option_code,share\n", encoding="utf-8")
    with pytest.raises(SurveyFormatError, match=":4: duplicate question id T1"):
        read_tidy(tmp_path / "a.csv", tmp_path / "q.csv")


# --- bundled format ------------------------------------------------------------------------------------


@pytest.fixture()
def survey_copy(tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(survey_path("wvs7"), target)
    return target


def _replace_line(path: Path, number: int, new: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_bundled_round_trip(tmp_path, wvs7):
    out = write_bundled(wvs7, tmp_path / "again")
    again = load_bundled(out)
    assert again.countries == wvs7.countries and again.languages == wvs7.languages
    assert again.distribution("DEU", "Q57").shares == pytest.approx(dict(wvs7.distribution("DEU", "Q57").shares))
    assert again.question("Q164").binary == wvs7.question("Q164").binary


def test_bundled_bad_share_names_file_and_line(survey_copy):
    answers = survey_copy / "answers.csv"
    second = answers.read_text(encoding="utf-8").splitlines()[1].split(",")
    second[3] = "0.9999"
    _replace_line(answers, 2, ",".join(second))
    with pytest.raises(SurveyFormatError, match=r"answers\.csv:\d+: shares of .* sum to"):
        load_bundled(survey_copy)


def test_bundled_non_numeric_share(survey_copy):
    answers = survey_copy / "answers.csv"
    second = answers.read_text(encoding="utf-8").splitlines()[1].split(",")
    second[3] = "lots"
    _replace_line(answers, 2, ",".join(second))
    with pytest.raises(SurveyFormatError, match=r"answers\.csv:2: share 'lots' is not a number"):
        load_bundled(survey_copy)


def test_bundled_duplicate_question(survey_copy):
    path = survey_copy / "questions.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([*lines, lines[0]]) + "\n", encoding="utf-8")
    with pytest.raises(SurveyFormatError, match=r"questions\.jsonl:261: duplicate question id Q1"):
        load_bundled(survey_copy)


def test_bundled_option_count_mismatch_in_text(survey_copy):
    path = survey_copy / "text" / "en.jsonl"
    record = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    record["options"].pop("4")
    _replace_line(path, 1, json.dumps(record))
    with pytest.raises(SurveyFormatError, match=r"en\.jsonl:1: question Q1: option codes"):
        load_bundled(survey_copy)


def test_bundled_missing_columns_and_empty_files(survey_copy):
    (survey_copy / "answers.csv").write_text("country,question_id,share\n", encoding="utf-8")
    with pytest.raises(SurveyFormatError, match="missing columns"):
        load_bundled(survey_copy)
    (survey_copy / "answers.csv").write_text("", encoding="utf-8")
    with pytest.raises(SurveyFormatError, match=r"answers\.csv: file is empty"):
        load_bundled(survey_copy)


# --- CLI -----------------------------------------------------------------------------------------------


def test_cli_show_germany_trust(cli):
    result = cli("surveys", "show", "wvs7", "--country", "DEU", "--question", "Q57")
    assert result.exit_code == 0
    assert "46.0%" in result.output and "54.0%" in result.output  # Germany's real Q57 shares


def test_cli_list_and_overview(cli):
    listed = cli("surveys", "list")
    assert listed.exit_code == 0 and "wvs7" in listed.output
    overview = cli("surveys", "show", "wvs7")
    assert "Religious Values" in overview.output and "57 countries" in overview.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["surveys", "show", "wvs9"], "unknown survey 'wvs9'"),
        (["surveys", "show", "wvs7", "--country", "Atlantis", "--question", "Q1"], "unknown country 'Atlantis'"),
        (["surveys", "show", "wvs7", "--question", "Q9999"], "unknown question 'Q9999'"),
        (["surveys", "show", "wvs7", "--topic", "Astrology"], "unknown topic 'Astrology'"),
    ],
)
def test_cli_unknown_names(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_cli_import_round_trips(cli, tmp_path):
    answers, questions = _write_tidy(
        tmp_path, "country,question_id,option_code,share\nDEU,T1,1,0.25\nDEU,T1,2,0.75\nDEU,T2,1,1.0\n"
    )
    result = cli("surveys", "import", "tidy", str(answers), "--questions", str(questions), "--name", "mytidy")
    assert result.exit_code == 0, result.output
    shown = cli("surveys", "show", "mytidy", "--country", "Germany", "--question", "T1")
    assert shown.exit_code == 0 and "75.0%" in shown.output
    assert load_survey("mytidy").majority_side("DEU", "T1") == "disagree"
    again = cli("surveys", "import", "tidy", str(answers), "--questions", str(questions), "--name", "mytidy")
    assert again.exit_code == 2 and "already exists" in again.output


def test_cli_import_microdata_and_goqa_by_path(cli, tmp_path):
    (tmp_path / "wvs.csv").write_text(MICRODATA, encoding="utf-8")
    out = tmp_path / "surveys"
    result = cli("surveys", "import", "wvs-microdata", str(tmp_path / "wvs.csv"), "--name", "mini", "--out", str(out))
    assert result.exit_code == 0, result.output
    shown = cli("surveys", "show", str(out / "mini"), "--country", "DEU", "--question", "Q57")
    assert "71.4%" in shown.output  # 2.5 / 3.5
    (tmp_path / "goqa.csv").write_text(GOQA, encoding="utf-8")
    result = cli("surveys", "import", "global-opinions", str(tmp_path / "goqa.csv"), "--name", "g", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert load_survey(out / "g").countries == ("BEL", "BRA", "DEU")


def test_failed_import_writes_nothing(cli, tmp_path):
    answers, questions = _write_tidy(tmp_path, "country,question_id,option_code,share\nDEU,T1,1,0.3\nDEU,T1,2,0.3\n")
    out = tmp_path / "out"
    result = cli(
        "surveys", "import", "tidy", str(answers), "--questions", str(questions), "--name", "x", "--out", str(out)
    )
    assert result.exit_code == 2 and "sum to" in result.output
    assert not (out / "x").exists()
    assert not out.exists() or not any(out.iterdir())


# --- country names through country_converter -------------------------------------------------------------


def test_tidy_country_names_go_through_coco(tmp_path):
    from selfalign.loaders.report import ImportReport

    answers, questions = _write_tidy(
        tmp_path,
        "country,question_id,option_code,share\nS. Korea,T1,1,0.4\nS. Korea,T1,2,0.6\nCzech Rep.,T1,1,1.0\n"
        "South Korea,T2,3,1.0\nFoo [/] Bar,T1,1,1.0\nIND.old_national,T1,2,1.0\n",
    )
    report = ImportReport()
    survey = read_tidy(answers, questions, report=report)
    assert survey.countries == ("CZE", "IND.old_national", "KOR")
    assert survey.distribution("South Korea", "T1").share("2") == pytest.approx(0.6)
    assert survey.country_names["KOR"] == "South Korea" and survey.country_names["CZE"] == "Czechia"
    assert dict(report.unmapped) == {"Foo [/] Bar": 1} and "'Foo [/] Bar'" in report.summary()


def test_wvs_microdata_keeps_northern_ireland_and_reports_unknown_codes(tmp_path, wvs7):
    from selfalign.loaders.report import ImportReport

    path = tmp_path / "wvs.csv"
    path.write_text("B_COUNTRY_ALPHA;Q57\nNIR;1\nNIR;2\nXXX;1\nDEU;1\nXXX;2\n", encoding="utf-8")
    report = ImportReport()
    survey = read_wvs_microdata([path], wvs7, report=report)
    assert survey.countries == ("DEU", "NIR") and survey.country_names["NIR"] == "Northern Ireland"
    assert report.respondents_skipped == 2 and dict(report.unmapped) == {"XXX": 2}
    with pytest.raises(SurveyFormatError, match=r"wvs\.csv:4: country code 'XXX' cannot be mapped"):
        read_wvs_microdata([path], wvs7, report=ImportReport(strict=True))


@pytest.mark.parametrize(
    ("names", "code"),
    [
        (("S. Korea", "South Korea", "Korea", "KOR", "kor"), "KOR"),
        (("Czech Rep.", "Czechia", "Czech Republic", "CZE"), "CZE"),
        (("Britain", "Great Britain", "United Kingdom", "UK", "GBR"), "GBR"),
        (("Albania", "ALBANIA", "ALB"), "ALB"),
        (("India (Current national sample)", "IND.current_national", "ind.current_national"), "IND.current_national"),
        (("Northern Ireland", "NIR"), "NIR"),
    ],
)
def test_country_names_map_to_one_code(names, code):
    from selfalign.countries import match_country

    assert {match_country(n).code for n in names} == {code}


@pytest.mark.parametrize("name", ["Palest. ter.", "PALEST_TER", "Foo [/] Bar", "Atlantis", "XYZ", "", "  "])
def test_names_coco_cannot_map_are_not_invented(name):
    from selfalign.countries import match_country

    assert match_country(name) is None


# --- writing safely ------------------------------------------------------------------------------------


def _import_tidy(cli, tmp_path, *extra: str):
    answers, questions = _write_tidy(tmp_path, "country,question_id,option_code,share\nDEU,T1,1,0.25\nDEU,T1,2,0.75\n")
    return cli("surveys", "import", "tidy", str(answers), "--questions", str(questions), *extra)


def test_empty_name_with_force_touches_no_survey(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFALIGN_HOME", str(tmp_path / "home"))
    assert _import_tidy(cli, tmp_path, "--name", "mine").exit_code == 0
    before = sorted(p.name for p in (tmp_path / "home" / "surveys").iterdir())
    result = _import_tidy(cli, tmp_path, "--name", "", "--force")
    assert result.exit_code == 2 and "the survey name is empty" in result.output
    assert sorted(p.name for p in (tmp_path / "home" / "surveys").iterdir()) == before == ["mine"]
    assert load_survey("mine").countries == ("DEU",)


def test_force_replaces_only_a_survey_of_that_name(cli, tmp_path):
    out = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work", encoding="utf-8")
    result = _import_tidy(cli, tmp_path, "--out", str(out), "--name", "../victim", "--force")
    assert result.exit_code == 2 and "not a plain name" in result.output
    (out / "plain").mkdir(parents=True)
    (out / "plain" / "notes.txt").write_text("mine", encoding="utf-8")
    result = _import_tidy(cli, tmp_path, "--out", str(out), "--name", "plain", "--force")
    assert result.exit_code == 2 and "is not a survey folder" in result.output
    assert (victim / "thesis.tex").read_text(encoding="utf-8") == "years of work"
    assert (out / "plain" / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert _import_tidy(cli, tmp_path, "--out", str(out), "--name", "s").exit_code == 0
    again = _import_tidy(cli, tmp_path, "--out", str(out), "--name", "s", "--force")
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in out.iterdir()) == ["plain", "s"]  # nothing left beside it


@pytest.mark.parametrize("failing", ["ENOSPC", "EACCES"])
def test_write_failure_changes_nothing(cli, tmp_path, monkeypatch, failing):
    import errno

    out = tmp_path / "out"
    assert _import_tidy(cli, tmp_path, "--out", str(out), "--name", "s").exit_code == 0
    before = {p.name: p.read_bytes() for p in (out / "s").iterdir() if p.is_file()}
    real_write = Path.write_text

    def full_disk(self, *args, **kwargs):
        if ".staging-" in str(self):
            raise OSError(getattr(errno, failing), os.strerror(getattr(errno, failing)), str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    result = _import_tidy(cli, tmp_path, "--out", str(out), "--name", "s", "--force")
    assert result.exit_code == 2 and "nothing was changed" in result.output
    assert ("no space left" in result.output) == (failing == "ENOSPC")
    assert sorted(p.name for p in out.iterdir()) == ["s"]
    assert {p.name: p.read_bytes() for p in (out / "s").iterdir() if p.is_file()} == before


KILLED_IMPORT = """
import importlib, sys, time
from pathlib import Path
READY = Path(sys.argv[1])
target = importlib.import_module("{module}")
real = target.{function}
calls = []
def stop(*args, **kwargs):
    calls.append(1)
    if len(calls) == {stop_at}:
        READY.write_text("ready")
        time.sleep(60)
    return real(*args, **kwargs)
target.{function} = stop
from selfalign.cli import main
sys.argv = ["selfalign", *sys.argv[2:]]
main()
"""


def _kill_mid_write(tmp_path: Path, out: Path, name: str, module: str, function: str, stop_at: int) -> None:
    import signal
    import subprocess
    import sys
    import time

    answers, questions = _write_tidy(tmp_path, "country,question_id,option_code,share\nDEU,T1,1,0.25\nDEU,T1,2,0.75\n")
    ready = tmp_path / f"ready-{name}-{function}"
    code = KILLED_IMPORT.format(module=module, function=function, stop_at=stop_at)
    argv = ["surveys", "import", "tidy", str(answers), "--questions", str(questions), "--name", name]
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(ready), *argv, "--out", str(out), "--force"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the import ended before the kill"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)


def test_import_killed_mid_write_leaves_no_visible_survey(cli, tmp_path, monkeypatch):
    out = tmp_path / "home" / "surveys"
    monkeypatch.setenv("SELFALIGN_HOME", str(tmp_path / "home"))
    # killed when every file is written and the survey is being loaded back, before it is published
    _kill_mid_write(tmp_path, out, "half", "selfalign.loaders.bundled", "load_bundled", 1)
    leftovers = [p.name for p in out.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".half.staging-")
    assert (out / leftovers[0] / "survey.toml").is_file()  # what `surveys list` used to show as a survey
    listed = cli("surveys", "list")
    assert listed.exit_code == 0 and "half" not in listed.output and "staging" not in listed.output
    with pytest.raises(UnknownChoiceError, match="unknown survey 'half'"):
        load_survey("half")
    assert _import_tidy(cli, tmp_path, "--name", "other").exit_code == 0  # the next import cleans up
    assert sorted(p.name for p in out.iterdir()) == ["other"]


def test_replacement_killed_between_renames_is_restored(cli, tmp_path):
    out = tmp_path / "out"
    assert _import_tidy(cli, tmp_path, "--out", str(out), "--name", "s").exit_code == 0
    _kill_mid_write(tmp_path, out, "s", "os", "replace", 2)  # old survey set aside, new one not in place
    assert not (out / "s").exists()
    assert sorted(p.name.split("-")[0] for p in out.iterdir()) == [".s.replaced", ".s.staging"]
    assert _import_tidy(cli, tmp_path, "--out", str(out), "--name", "t").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["s", "t"]
    assert load_survey(out / "s").distribution("DEU", "T1").share("2") == pytest.approx(0.75)
