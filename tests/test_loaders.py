"""Loaders and imports: hand-computed figures, CLI round trips, and every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from selfalign.errors import SurveyFormatError
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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("question,options\n", "missing columns"),
        ("question,selections,options,source\nQ?,\"{'X': [0.5]}\",\"['a', 'b']\",S\n", "1 shares for 2 options"),
        ("question,selections,options,source\nQ?,\"{'X': [0.5, 0.1]}\",\"['a', 'b']\",S\n", "sum to 0.6000"),
        ("question,selections,options,source\nQ?,\"not a dict\",\"['a', 'b']\",S\n", "'selections' is not"),
    ],
)
def test_global_opinions_bad_input(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SurveyFormatError, match=message):
        read_global_opinions(path)


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
