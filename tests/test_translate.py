"""``selfalign translate`` against a real OpenAI-compatible HTTP server on 127.0.0.1 (the loopback server).

The server's "model" translates deterministically: every string value of the JSON object it is sent comes
back prefixed with ``(<lang>) `` (the ``context`` key is dropped), so the written file can be checked exactly.
It counts requests, so the tests can prove that a second run makes no call.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from selfalign.errors import SelfAlignError, SurveyFormatError
from selfalign.loaders import load_bundled, load_survey, user_translations_dir, write_bundled
from selfalign.models.loopback import LoopbackServer, Reply
from selfalign.survey import Survey
from selfalign.translate import (
    ANSWER_WORDS,
    LABEL_CHUNK,
    OffFormatReply,
    Unit,
    build_units,
    language_name,
    parse_reply,
    translate_survey,
)

MODEL = "openai/loopback-translator"
FAKE_KEY = "sk-selfalign-test-4f9c2e7d1b"
# Q1-Q3 share one label set; Q57 and Q152 (no binary split) have their own; Q223 has 976 party names
TINY_QUESTIONS = ("Q1", "Q2", "Q3", "Q57", "Q152", "Q223")
TINY_COUNTRIES = ("DEU", "EGY", "JPN")


class Translator:
    """The server's policy: prefix every string with ``(lang) ``; off-format replies on demand.

    ``off_once``: payloads whose question contains one of these strings get an off-format first reply (the
    retry, which carries a correction turn, is answered properly). ``off_always``: always off-format.
    """

    def __init__(self, lang: str = "fr") -> None:
        self.lang = lang
        self.off_once: set[str] = set()
        self.off_always: set[str] = set()
        self.payloads: list[dict[str, Any]] = []

    def __call__(self, body: dict[str, Any], index: int) -> Reply:
        messages = body["messages"]
        payload = json.loads(next(m["content"] for m in messages if m["role"] == "user"))
        self.payloads.append(payload)
        marker = json.dumps(payload, ensure_ascii=False)
        if any(s in marker for s in self.off_always):
            return Reply("Sure! Here is the translation: question = ...")
        if len(messages) == 2 and any(s in marker for s in self.off_once):
            return Reply('{"question": "only the question"')
        out = {k: self._tr(v) for k, v in payload.items() if k != "context"}
        return Reply("```json\n" + json.dumps(out, ensure_ascii=False) + "\n```")

    def _tr(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._tr(v) for v in value]
        return f"({self.lang}) {value}"


@pytest.fixture()
def server():
    translator = Translator()
    srv = LoopbackServer(policy=translator).start()
    srv.translator = translator  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A fake API key in the environment and a user data folder (translations overlay) of the test's own."""
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("SELFALIGN_HOME", str(tmp_path / "home"))


@pytest.fixture()
def tiny(tmp_path: Path, wvs7: Survey) -> Path:
    """An English-only copy of six wvs7 questions and three countries, written in the bundled format."""
    questions = [wvs7.question(q) for q in TINY_QUESTIONS]
    answers = [a for (c, q), a in wvs7.answers.items() if c in TINY_COUNTRIES and q in TINY_QUESTIONS]
    survey = Survey.build(
        "tiny",
        questions,
        answers,
        languages=[wvs7.languages_info["en"]],
        native_languages={"DEU": "de", "EGY": "ar", "JPN": "ja"},
    )
    return write_bundled(survey, tmp_path / "tiny")


def _run(folder: Path, server: LoopbackServer, tmp_path: Path, cache_dir_name: str = "cache", **kwargs: Any):
    kwargs.setdefault("lang", "fr")
    return translate_survey(
        folder, model=MODEL, api_base=server.api_base, cache_dir=tmp_path / cache_dir_name, concurrency=4, **kwargs
    )


def _expected_requests(survey: Survey) -> int:
    return len(build_units(survey, "en", "fr"))


def test_translation_is_complete_loads_as_a_language_and_a_second_run_makes_no_call(tiny, server, tmp_path):
    english = load_bundled(tiny)
    report = _run(tiny, server, tmp_path)
    assert report.complete and not report.failed
    assert report.destination.kind == "survey"
    assert report.written == tiny / "text" / "fr.jsonl"
    assert not report.destination.partial_file.exists()
    # one request per question, one per chunk of a shared or long label set, one for the answer words
    shared_chunks = 1 + -(-976 // LABEL_CHUNK)  # Q1-Q3's labels once; Q223's 976 labels in chunks
    assert server.request_count == report.calls == _expected_requests(english) == 1 + shared_chunks + 6
    assert sum("Very important" in json.dumps(p) for p in server.translator.payloads) == 1

    survey = load_survey(tiny)
    assert survey.languages == ("en", "fr")
    for q in survey.questions:
        en = english.question(q.id)
        assert q.text("fr") == f"(fr) {en.text('en')}"
        assert q.option_labels("fr") == tuple(f"(fr) {label}" for label in en.option_labels("en"))
        if en.binary is not None:
            assert q.binary is not None and q.binary.statement("fr") == f"(fr) {en.binary.statement('en')}"
    assert survey.side_labels("fr") == ("(fr) agree", "(fr) disagree")
    info = survey.languages_info["fr"]
    assert info.name == "French" and info.machine_translated and info.checked == "not reviewed"
    assert re.fullmatch(rf"machine-translated by {MODEL} from en on \d{{4}}-\d\d-\d\d", info.produced)
    # the English file and the figures are untouched
    assert (tiny / "text" / "en.jsonl").read_text() == (tiny / "text" / "en.jsonl").read_text()
    assert load_bundled(tiny).distribution("DEU", "Q1") == english.distribution("DEU", "Q1")

    again = _run(tiny, server, tmp_path)
    assert again.complete and again.calls == 0 and again.reused == again.units
    assert server.request_count == report.calls


def test_the_model_cache_alone_makes_a_repeat_free(tiny, server, tmp_path):
    before = (tiny / "survey.toml").read_text()
    first = _run(tiny, server, tmp_path)
    # forget the written language: only the model cache is left
    (tiny / "survey.toml").write_text(before)
    (tiny / "text" / "fr.jsonl").unlink()
    again = _run(tiny, server, tmp_path)
    assert again.complete and again.calls == 0 and again.cache_hits == first.units
    assert server.request_count == first.calls


def test_translated_language_works_in_the_cli(tiny, server, tmp_path, cli):
    _run(tiny, server, tmp_path)
    result = cli("surveys", "show", str(tiny), "--question", "Q1", "--lang", "fr", "--country", "DEU")
    assert result.exit_code == 0, result.output
    assert "(fr) In your own life, how important is family" in result.output
    assert "(fr) Very important" in result.output
    missing = cli("surveys", "show", str(tiny), "--lang", "xx")
    assert missing.exit_code == 2
    assert "unknown language 'xx'" in missing.output and "valid: en, fr" in missing.output


def test_cli_translate_end_to_end(tiny, server, tmp_path, cli):
    args = [
        "translate",
        "--survey",
        str(tiny),
        "--lang",
        "sw",
        "--model",
        MODEL,
        "--api-base",
        server.api_base,
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    server.translator.lang = "sw"
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "Swahili (sw) written to" in result.output and "not reviewed" in result.output
    assert load_survey(tiny).question("Q57").text("sw").startswith("(sw) ")
    calls = server.request_count
    again = cli(*args)
    assert again.exit_code == 0 and "0 model calls" in again.output
    assert server.request_count == calls


def test_off_format_reply_is_retried_once(tiny, server, tmp_path):
    server.translator.off_once.add("how important are friends")  # Q2
    report = _run(tiny, server, tmp_path)
    assert report.complete
    assert server.request_count == _expected_requests(load_bundled(tiny, skip_languages={"fr"})) + 1
    retries = [r for r in server.requests if len(r["messages"]) == 4]
    assert len(retries) == 1 and "could not be used" in retries[0]["messages"][-1]["content"]
    assert "how important are friends" in retries[0]["messages"][1]["content"]
    assert load_survey(tiny).question("Q2").text("fr").startswith("(fr) In your own life, how important are friends")


def test_question_that_stays_off_format_fails_alone_and_a_rerun_retries_only_it(tiny, server, tmp_path, cli):
    server.translator.off_always.add("how important are friends")  # Q2
    args = [
        "translate",
        "--survey",
        str(tiny),
        "--lang",
        "fr",
        "--model",
        MODEL,
        "--api-base",
        server.api_base,
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    result = cli(*args)
    assert result.exit_code == 2
    line = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(line) == 1
    assert "1 question(s) failed: Q2 (off-format reply twice" in line[0]
    assert "fr.partial.jsonl" in line[0] and "retry only those" in line[0]
    assert not (tiny / "text" / "fr.jsonl").exists()
    assert "fr" not in load_survey(tiny).languages  # nothing half-written is loaded
    partial = tiny / "text" / "fr.partial.jsonl"
    saved = [json.loads(x) for x in partial.read_text().splitlines()]
    assert sum("result" in r for r in saved) == _expected_requests(load_bundled(tiny)) - 1
    assert [r["key"] for r in saved if "failed" in r] == ["question:Q2"]

    # the model behaves now: the re-run asks only for Q2 (bypassing the cached off-format replies)
    server.translator.off_always.clear()
    calls = server.request_count
    report = _run(tiny, server, tmp_path)
    assert report.complete and report.calls == 1 and server.request_count == calls + 1
    assert json.loads(server.requests[-1]["messages"][1]["content"])["question"].startswith(
        "In your own life, how important are friends"
    )
    assert not partial.exists()
    assert load_survey(tiny).question("Q2").text("fr").startswith("(fr) ")


def test_failed_shared_labels_fail_every_question_that_uses_them(tiny, server, tmp_path):
    server.translator.off_always.add("Rather important")  # Q1-Q3's shared label set
    report = _run(tiny, server, tmp_path)
    assert not report.complete
    assert sorted(report.failed) == ["Q1", "Q2", "Q3"]
    assert all(reason.startswith("shared option labels: off-format reply twice") for reason in report.failed.values())


def test_failed_answer_words_are_named(tiny, server, tmp_path):
    server.translator.off_always.add('"disagree"')
    report = _run(tiny, server, tmp_path)
    assert list(report.failed) == [ANSWER_WORDS]


def test_read_only_survey_goes_to_the_user_translations_overlay(tiny, server, tmp_path, monkeypatch):
    import selfalign.translate.store as tr

    monkeypatch.setattr(tr, "inside_installed_package", lambda folder: True)
    toml_before = (tiny / "survey.toml").read_text()
    report = _run(tiny, server, tmp_path)
    overlay = user_translations_dir("tiny")
    assert report.destination.kind == "overlay" and report.written == overlay / "fr.jsonl"
    assert (overlay / "fr.meta.toml").exists() and not (overlay / "fr.partial.jsonl").exists()
    assert (tiny / "survey.toml").read_text() == toml_before and not (tiny / "text" / "fr.jsonl").exists()
    survey = load_survey(tiny)
    assert "fr" in survey.languages and survey.languages_info["fr"].machine_translated
    assert survey.question("Q152").option_labels("fr")[0].startswith("(fr) ")
    assert "fr" not in load_survey(tiny, translations=False).languages
    calls = server.request_count
    assert _run(tiny, server, tmp_path).calls == 0 and server.request_count == calls


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows[:-1], "missing questions: Q223"),
        (lambda rows: [*rows, {**rows[0], "id": "Q999"}], "question Q999 is not in questions.jsonl"),
        (
            lambda rows: [
                {**r, "options": dict(list(r["options"].items())[:-1])} if r["id"] == "Q57" else r for r in rows
            ],
            "question Q57: option codes",
        ),
    ],
    ids=["missing", "extra", "option-count"],
)
def test_invalid_overlay_fails_the_whole_load(tiny, server, tmp_path, monkeypatch, edit, message):
    import selfalign.translate.store as tr

    monkeypatch.setattr(tr, "inside_installed_package", lambda folder: True)
    _run(tiny, server, tmp_path)
    path = user_translations_dir("tiny") / "fr.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in edit(rows)))
    with pytest.raises(SurveyFormatError) as info:
        load_survey(tiny)
    assert str(path) in str(info.value) and message in str(info.value)


def test_out_writes_a_survey_copy_and_leaves_the_source_alone(tiny, server, tmp_path):
    before = sorted(p.name for p in (tiny / "text").iterdir())
    out = tmp_path / "tiny-fr"
    report = _run(tiny, server, tmp_path, out=out)
    assert report.written == out / "text" / "fr.jsonl"
    assert sorted(p.name for p in (tiny / "text").iterdir()) == before
    assert load_survey(out).languages == ("en", "fr")
    with pytest.raises(SelfAlignError, match="not a survey folder"):
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "x.txt").write_text("x")
        _run(tiny, server, tmp_path, out=tmp_path / "junk")


def test_no_api_key_in_any_written_file(tiny, server, tmp_path, monkeypatch):
    import selfalign.translate.store as tr

    _run(tiny, server, tmp_path)
    monkeypatch.setattr(tr, "inside_installed_package", lambda folder: True)
    server.translator.lang = "it"
    _run(tiny, server, tmp_path, lang="it")
    server.translator.off_always.add("Rather important")
    _run(tiny, server, tmp_path, lang="ko")  # fails: leaves a partial file behind
    assert server.headers_seen[0]["authorization"] == f"Bearer {FAKE_KEY}"  # the key was really used
    home = user_translations_dir()
    written = [p for base in (tiny, tmp_path / "cache", home) for p in base.rglob("*") if p.is_file()]
    assert any(p.name == "ko.partial.jsonl" for p in written) and any(p.name == "it.meta.toml" for p in written)
    for path in written:
        assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_bad_arguments(tiny, server, tmp_path):
    with pytest.raises(SelfAlignError, match="not a language code"):
        _run(tiny, server, tmp_path, lang="French")
    with pytest.raises(SelfAlignError, match="unknown language 'xx'"):
        _run(tiny, server, tmp_path, source_lang="xx")
    with pytest.raises(SelfAlignError, match="already has language 'en' \\(English, not machine-translated\\)"):
        _run(tiny, server, tmp_path, lang="en", out=tmp_path / "copy")
    assert not (tmp_path / "copy").exists()  # nothing copied for a run that cannot start
    with pytest.raises(SelfAlignError, match="already has language 'de'"):
        translate_survey("wvs7", "de", MODEL, api_base=server.api_base, cache_dir=tmp_path / "cache")
    assert server.request_count == 0


def _unit(payload: dict[str, Any]) -> Unit:
    return Unit("question:Q1", "question", payload, ("Q1",), "0" * 16)


def test_parse_reply_accepts_fences_text_and_option_objects() -> None:
    unit = _unit({"question": "Q?", "statement": "S.", "options": ["a", "b"]})
    want = {"question": "F?", "statement": "T.", "options": ["x", "y"]}
    assert parse_reply(json.dumps(want), unit) == want
    assert parse_reply("```json\n" + json.dumps(want) + "\n```", unit) == want
    assert parse_reply("Here you go:\n" + json.dumps(want) + "\nHope it helps.", unit) == want
    assert parse_reply(json.dumps(want) + "\nUser: " + json.dumps(unit.payload), unit) == want  # trailing turns
    assert parse_reply('{"broken": \n' + json.dumps(want), unit) == want  # the first object that parses
    as_object = {**want, "options": {"1": "x", "2": "y"}}
    assert parse_reply(json.dumps(as_object), unit) == want


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("no json here", "holds no JSON object"),
        ('{"question": "F?", "statement": "T.", "options": ["x", "y"]', "not valid JSON"),
        ('{"question": "F?" "statement": "T."}', "not valid JSON"),
        ('{"question": " Q? ", "statement": "s.", "options": ["x", "y"]}', "repeats the source text untranslated"),
        ('{"question": "F?", "options": ["x", "y"]}', "'statement' is missing or empty"),
        ('{"question": "F?", "statement": "T.", "options": ["x"]}', "must list 2 labels, got 1"),
        ('{"question": "F?", "statement": "T.", "options": ["x", ""]}', "option label is empty"),
        ('["F?", "T."]', "holds no JSON object"),
    ],
)
def test_parse_reply_rejects_off_format(reply: str, problem: str) -> None:
    with pytest.raises(OffFormatReply, match=re.escape(problem)):
        parse_reply(reply, _unit({"question": "Q?", "statement": "S.", "options": ["a", "b"]}))


def test_language_names() -> None:
    assert language_name("fr") == "French"
    assert language_name("pt-BR") == "Portuguese (BR)"
    assert language_name("qqq") == "qqq"


def test_units_share_label_sets_and_chunk_long_ones(wvs7: Survey) -> None:
    units = build_units(wvs7, "en", "fr")
    labels = [u for u in units if u.kind == "labels"]
    questions = [u for u in units if u.kind == "question"]
    assert len(questions) == len(wvs7.questions)
    assert all(u.n_options <= LABEL_CHUNK for u in units)
    q223 = [u for u in labels if "Q223" in u.questions]
    assert sum(u.n_options for u in q223) == len(wvs7.question("Q223").options)
    # every question gets its labels exactly once: from its own request or from shared label units
    for q in wvs7.questions:
        own = next(u for u in questions if u.questions == (q.id,)).n_options
        shared = sum(u.n_options for u in labels if q.id in u.questions)
        assert (own == 0) != (shared == 0) and own + shared == len(q.options)
    assert len(units) < 2 * len(wvs7.questions) - 150  # far fewer requests than one per question and label set


def test_reviewed_file_is_kept_and_a_missing_question_is_all_that_is_translated(tiny, server, tmp_path):
    _run(tiny, server, tmp_path)
    text = tiny / "text" / "fr.jsonl"
    rows = [json.loads(x) for x in text.read_text().splitlines()]
    rows[0]["question"] = "Dans votre vie, la famille est-elle importante ?"  # a reviewer's correction
    toml = (tiny / "survey.toml").read_text().replace('checked = "not reviewed"', 'checked = "reviewed by A. B."')
    (tiny / "survey.toml").write_text(toml)
    text.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    calls = server.request_count
    report = _run(tiny, server, tmp_path)
    assert report.complete and report.calls == 0 and server.request_count == calls
    survey = load_survey(tiny)
    assert survey.question("Q1").text("fr") == "Dans votre vie, la famille est-elle importante ?"
    assert survey.languages_info["fr"].checked == "reviewed by A. B."

    # a question missing from the file (e.g. added to the survey later): only its request is made again
    text.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows if r["id"] != "Q57"))
    with pytest.raises(SurveyFormatError, match="missing questions: Q57"):
        load_survey(tiny)
    report = _run(tiny, server, tmp_path, cache_dir_name="cache2")
    assert report.complete and report.translated == 1 and report.calls == 1
    assert report.reused == report.units - 1
    assert json.loads(server.requests[-1]["messages"][1]["content"])["question"] == load_bundled(tiny).question(
        "Q57"
    ).text("en")
    survey = load_survey(tiny)
    assert survey.question("Q1").text("fr") == "Dans votre vie, la famille est-elle importante ?"
    assert survey.question("Q57").text("fr").startswith("(fr) ")


def test_only_folders_inside_an_installed_package_are_read_only(tmp_path) -> None:
    import selfalign
    from selfalign.translate.store import choose_destination, inside_installed_package

    packaged = Path(selfalign.__file__).resolve().parent / "_bundled" / "surveys" / "wvs7"
    assert inside_installed_package(packaged)
    assert not inside_installed_package(tmp_path)
    (tmp_path / "s" / "text").mkdir(parents=True)
    (tmp_path / "s" / "survey.toml").write_text('name = "s"\n')
    assert choose_destination(tmp_path / "s", "fr").kind == "survey"
    assert choose_destination(packaged, "fr").kind == "overlay"
