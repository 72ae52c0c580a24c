"""Perturbations of the prompt (option order, answer words, templates) and the robustness summaries: how each is
rendered in every bundled language, recorded per row, kept apart on resume, scored on option codes, summarised
per program (flips, spread, gains under every perturbation) in compare, specs and the report; bad names are
one-line errors."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.metrics import bootstrap_ci, compare_to_baseline, paired_difference, probe_metrics
from selfalign.models import routes
from selfalign.models.loopback import LoopbackServer, Reply
from selfalign.models.types import AnswerDistribution, ScoringMethod
from selfalign.perturbations import (
    PERTURBATION_COLUMNS,
    Perturbation,
    check_option_order,
    option_permutation,
    parse_perturbation,
    standard_perturbations,
)
from selfalign.plan import plan_run, prompt_sha256, render_rows, row_key
from selfalign.programs import AlignmentProgram, DemonstrationsPart, Probe, SelfAlign, ZeroShot
from selfalign.prompts import (
    ANSWER_WORD_SETS,
    ANSWER_WORDS,
    INTERVIEW,
    SCAFFOLDING,
    TEMPLATE_NAMES,
    Item,
    ShownDemonstration,
    answer_word_set,
    render,
)
from selfalign.report import analysis_table, build_report, render_report, to_html, to_markdown
from selfalign.robustness import ROBUSTNESS_CSV, has_perturbations, robustness_frame, with_perturbations
from selfalign.runlog import LOG_FILE, read_log
from selfalign.runner import run_spec
from selfalign.runtable import COLUMNS, TABLE_PARQUET, load_run_table, model_fields
from selfalign.specs import ExperimentSpec, load_spec, parse_spec, validate_spec
from selfalign.survey import Protocol, ScaleKind

ALIAS = "loop"


# --- the perturbations themselves -----------------------------------------------------------------------------


def test_option_orders_are_permutations_drawn_per_question_not_per_country() -> None:
    assert option_permutation("surveyed", "Q1", 4) == (0, 1, 2, 3)
    assert option_permutation("reversed", "Q1", 4) == (3, 2, 1, 0)
    for qid in ("Q1", "Q46", "Q164", "Q199"):
        for n in (2, 3, 4, 5, 10):
            shift = option_permutation("shift", qid, n)
            by = shift[0]
            assert 1 <= by < n and shift == tuple((by + i) % n for i in range(n))  # a cyclic shift, never identity
            shuffle = option_permutation("shuffle:3", qid, n)
            assert sorted(shuffle) == list(range(n)) and shuffle != tuple(range(n))
            assert option_permutation("shuffle:3", qid, n) == shuffle  # seeded: the same in every process
    draws = {option_permutation(f"shuffle:{s}", "Q46", 5) for s in range(12)}
    assert len(draws) > 6  # seeds draw different orders
    assert check_option_order("shift") == "shift:0" and check_option_order("shuffle:07") == "shuffle:7"
    assert option_permutation("reversed", "Q1", 2) == option_permutation("shuffle:5", "Q1", 2) == (1, 0)


@pytest.mark.parametrize("bad", ["rotated", "sorted", "shuffled", "Reversed"])
def test_an_unknown_option_order_lists_the_valid_ones(bad: str) -> None:
    with pytest.raises(UnknownChoiceError) as info:
        check_option_order(bad)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"unknown option order {bad!r}")
    assert message.endswith("; valid: surveyed, reversed, shift[:SEED], shuffle[:SEED]")
    with pytest.raises(SelfAlignError, match="seed after ':' must be a whole number"):
        check_option_order("shuffle:x")


def test_unknown_templates_and_answer_words_list_the_valid_ones() -> None:
    with pytest.raises(UnknownChoiceError, match=r"^unknown template 'chat'; valid: default, list, interview$"):
        Probe("Q164", "NGA", template="chat")
    with pytest.raises(
        UnknownChoiceError, match=r"^unknown answer words 'yes/no'; valid: agree-disagree, yes-no, true-false$"
    ):
        Probe("Q164", "NGA", answer_words="yes/no")
    with pytest.raises(UnknownChoiceError, match="unknown option order 'backwards'"):
        SelfAlign(k=1)(question_id="Q164", country="NGA", option_order="backwards")
    with pytest.raises(
        UnknownChoiceError,
        match=r"unknown perturbation 'colour=red'; valid: unperturbed, order=surveyed, order=reversed",
    ):
        parse_perturbation("colour=red")
    assert parse_perturbation("order=shuffle:1+template=list") == Perturbation("shuffle:1", template="list")
    assert Perturbation("shuffle:1", "yes-no", "list").label == "order=shuffle:1 + words=yes-no + template=list"
    assert [p.label for p in standard_perturbations("binary")] == [
        "unperturbed",
        "order=reversed",
        "words=yes-no",
        "words=true-false",
        "template=list",
        "template=interview",
    ]


def test_every_bundled_language_has_every_template_and_answer_word_set(wvs7) -> None:
    languages = set(wvs7.languages_info)
    assert len(languages) == 11
    assert languages <= set(SCAFFOLDING) and languages <= set(INTERVIEW)
    for name in ANSWER_WORD_SETS[1:]:
        assert languages <= set(ANSWER_WORDS[name]), name
    for lang in languages:
        survey_words = wvs7.side_labels(lang)
        assert answer_word_set(survey_words, lang) == "agree-disagree"
        sets = [set(survey_words)] + [{w.positive, w.negative} for w in (ANSWER_WORDS[n][lang] for n in ANSWER_WORDS)]
        assert all(len(s) == 2 for s in sets) and len({frozenset(s) for s in sets}) == 3, lang  # all distinct
        questions = set()
        for name in ANSWER_WORDS:
            words = ANSWER_WORDS[name][lang]
            assert words.statement_question.count("{statement}") == 1
            assert answer_word_set((words.negative, words.positive), lang) == name  # in any order
            questions.add(words.statement_question)
        questions.add(SCAFFOLDING[lang].statement_question)
        assert len(questions) == 3, lang  # each set has its own question


@pytest.mark.parametrize("lang", ["en", "de", "es", "pt", "ru", "zh", "ja", "ar", "hi", "tr", "sw"])
def test_templates_render_in_the_probes_language(wvs7, lang: str) -> None:
    sides = wvs7.side_labels(lang)
    statement = wvs7.question("Q164").binary.statement(lang)
    demo = ShownDemonstration(Item(wvs7.question("Q6").binary.statement(lang), sides, lang, True), sides[0])
    texts = {}
    for template in TEMPLATE_NAMES:
        prompt = render(Item(statement, sides, lang, True), demonstrations=[demo], template=template)
        texts[template] = prompt.text
        assert prompt.continuations == tuple(f" {s}" for s in sides) and prompt.labels == ("A", "B")
        assert prompt.text.count(statement) == 1 and len(prompt.messages) == 4
        assert all(m["content"] for m in prompt.messages)
    words = INTERVIEW[lang]
    assert texts["interview"].startswith(words.instruction)
    assert f"\n{words.respondent}: {sides[0]}\n" in texts["interview"]
    assert texts["interview"].endswith(f"{words.respondent}:")
    assert texts["list"].endswith(f"- {sides[0]}\n- {sides[1]}\n{SCAFFOLDING[lang].answer}:")
    assert texts["default"].endswith(f"{SCAFFOLDING[lang].answer}:")
    assert len(set(texts.values())) == 3
    with pytest.raises(UnknownChoiceError, match="unknown template"):
        render(Item(statement, sides, lang, True), template="fancy")


# --- programs: what a perturbed probe shows ---------------------------------------------------------------------


def test_reversed_yes_no_probe_shows_its_demonstrations_the_same_way(wvs7) -> None:
    program = SelfAlign(strategy="chrf", k=3)
    plain = program.prepare(Probe("Q164", "NGA"))
    shown = program.prepare(Probe("Q164", "NGA", option_order="reversed", answer_words="yes-no"))
    assert plain.option_codes == ("agree", "disagree") and shown.option_codes == ("disagree", "agree")
    assert shown.prompt.options == ("no", "yes") and shown.prompt.continuations == (" no", " yes")
    assert shown.demo_ids == plain.demo_ids  # the same demonstrations, shown with the same perturbation
    for before, after in zip(plain.demos, shown.demos, strict=True):
        assert after["options"] == ["no", "yes"]
        assert after["answer"] == {"agree": "yes", "disagree": "no"}[before["answer"]]
    text = shown.prompt.text
    assert text.count("Is the following statement true for you?") == 4 and "agree" not in text
    assert text.count("Options: no / yes") == 4
    assert prompt_sha256(shown.prompt) != prompt_sha256(plain.prompt)


def test_a_distribution_answer_follows_the_order_shown(wvs7) -> None:
    program = AlignmentProgram([DemonstrationsPart("chrf", 2, "distribution")])
    probe = Probe("Q46", "JPN", protocol=Protocol.OPTIONS)
    plain = program.prepare(probe)
    shuffled = program.prepare(Probe("Q46", "JPN", protocol=Protocol.OPTIONS, option_order="shuffle:1"))
    assert sorted(shuffled.option_codes) == sorted(plain.option_codes) and shuffled.option_codes != plain.option_codes
    for before, after in zip(plain.demos, shuffled.demos, strict=True):
        order = option_permutation("shuffle:1", before["question_id"], len(before["options"]))
        assert after["options"] == [before["options"][i] for i in order]
        parts = before["answer"].split(", ")
        assert after["answer"] == ", ".join(parts[i] for i in order)  # each label keeps its share


def test_reversed_order_on_a_nominal_option_list_is_just_another_order(wvs7) -> None:
    question = next(q for q in wvs7.questions if q.scale is ScaleKind.NOMINAL and q.supports(Protocol.OPTIONS))
    country = next(c for c in wvs7.countries if wvs7.has_answers(c, question.id))
    probe = Probe(question.id, country, protocol=Protocol.OPTIONS, option_order="reversed")
    prepared = ZeroShot().prepare(probe)
    assert prepared.option_codes == question.option_codes[::-1]
    assert prepared.prompt.options == question.option_labels("en")[::-1]


def test_answer_words_need_the_binary_protocol_and_a_language_that_has_them(wvs7) -> None:
    with pytest.raises(SelfAlignError, match="apply to the binary protocol only"):
        ZeroShot().prepare(Probe("Q46", "JPN", protocol=Protocol.OPTIONS, answer_words="true-false"))
    with pytest.raises(SelfAlignError, match=r"^answer words 'yes-no' are not written for language 'fr'"):
        from selfalign.prompts import answer_words

        answer_words("yes-no", "fr", ("d'accord", "pas d'accord"))


# --- scoring on codes -----------------------------------------------------------------------------------------


def test_probabilities_are_mapped_back_to_codes_whatever_the_order_shown() -> None:
    codes = ["1", "2", "3", "4"]
    shares = {"1": 0.1, "2": 0.2, "3": 0.3, "4": 0.4}
    base = {"option_codes": json.dumps(codes), "country_shares": json.dumps(shares), "protocol": "options"}
    base["scale"] = "ordinal"
    by_code = {"1": 0.05, "2": 0.15, "3": 0.5, "4": 0.3}
    for shown in (["1", "2", "3", "4"], ["4", "3", "2", "1"], ["3", "1", "4", "2"]):
        dist = AnswerDistribution(
            options=tuple(shown), probs=tuple(by_code[c] for c in shown), method=ScoringMethod.LOGPROB
        )
        fields = model_fields({**base, "order_shown": json.dumps(shown)}, dist)
        assert json.loads(fields["probs"]) == by_code and list(json.loads(fields["probs"])) == codes
        assert fields["model_choice"] == "3"
        expected = probe_metrics(list(by_code.values()), list(shares.values()), ordinal=True)
        assert fields["wasserstein_similarity"] == pytest.approx(expected["wasserstein_similarity"])
        assert fields["agreement"] == expected["agreement"] and fields["js_similarity"] == pytest.approx(
            expected["js_similarity"]
        )


# --- specs --------------------------------------------------------------------------------------------------------


def _spec(**overrides) -> ExperimentSpec:
    grid = overrides.pop("grid", [{"programs": ["zero-shot"], "countries": ["NGA"]}])
    return parse_spec({"name": "t", "limit": 3, "grid": grid, **overrides})


def test_spec_axes_expand_into_rows_that_record_their_perturbation(wvs7) -> None:
    spec = validate_spec(
        _spec(
            option_orders=["surveyed", "reversed"],
            grid=[
                {"programs": ["zero-shot", "self-align-chrf"], "countries": ["NGA"]},
                {"programs": ["zero-shot"], "countries": ["NGA"], "answer_words": ["yes-no", "true-false"]},
                {"programs": ["zero-shot"], "countries": ["NGA"], "templates": ["default", "interview"]},
            ],
        ),
        wvs7,
    )
    plan = plan_run(spec, wvs7)
    cells = {(r.base["program"], r.base["option_order"], r.base["answer_words"], r.base["template"]) for r in plan.rows}
    assert cells == {
        ("zero-shot", "surveyed", "agree-disagree", "default"),
        ("zero-shot", "reversed", "agree-disagree", "default"),
        ("self-align-chrf", "surveyed", "agree-disagree", "default"),
        ("self-align-chrf", "reversed", "agree-disagree", "default"),
        ("zero-shot", "surveyed", "yes-no", "default"),
        ("zero-shot", "reversed", "yes-no", "default"),
        ("zero-shot", "surveyed", "true-false", "default"),
        ("zero-shot", "reversed", "true-false", "default"),
        ("zero-shot", "surveyed", "agree-disagree", "interview"),
        ("zero-shot", "reversed", "agree-disagree", "interview"),
    }
    assert len(plan.rows) == len(cells) * 3 == len({r.key for r in plan.rows})
    render_rows(plan, plan.rows)
    hashes = {}
    for row in plan.rows:
        b = row.base
        shown = json.loads(b["order_shown"])
        assert shown == (["disagree", "agree"] if b["option_order"] == "reversed" else ["agree", "disagree"])
        labels = dict(zip(json.loads(b["option_codes"]), json.loads(b["options_shown"]), strict=True))
        assert row.prompt.options == tuple(labels[c] for c in shown)
        hashes.setdefault((b["program"], b["question_id"]), set()).add(b["prompt_sha256"])
    assert all(len(h) == (2 if p == "self-align-chrf" else 8) for (p, _), h in hashes.items())  # all differ


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"option_orders": ["rotate"]}, "unknown option order 'rotate'"),
        ({"templates": ["fancy"]}, "unknown template 'fancy'; valid: default, list, interview"),
        ({"answer_words": ["oui-non"]}, "unknown answer words 'oui-non'"),
        ({"grid": [{"programs": ["zero-shot"], "countries": ["NGA"], "templates": ["qa"]}]}, "unknown template 'qa'"),
        ({"protocol": "options", "answer_words": ["yes-no"]}, "apply to the binary protocol only"),
        ({"option_orders": "reversed"}, None),  # a comma-separated string is a list
    ],
)
def test_bad_perturbation_names_in_a_spec_are_one_line_errors(wvs7, overrides, message) -> None:
    if message is None:
        assert validate_spec(_spec(**overrides), wvs7).option_orders == ("reversed",)
        return
    with pytest.raises(SelfAlignError) as info:
        validate_spec(_spec(**overrides), wvs7)
    assert "\n" not in str(info.value) and message in str(info.value)


def test_unperturbed_specs_keep_their_hash() -> None:
    # the hashes of the bundled specs before the perturbation axes existed (compare's run folders depend on them)
    assert load_spec("smoke", validate=False).settings_hash() == "c73930c050"
    assert load_spec("paper", validate=False).settings_hash() == "5bd9f72ce3"
    explicit = _spec(option_orders=["surveyed"], answer_words=["agree-disagree"], templates=["default"])
    assert explicit.settings_hash() == _spec().settings_hash() != _spec(templates=["list"]).settings_hash()


def test_the_bundled_robustness_spec_varies_one_thing_at_a_time(wvs7) -> None:
    plan = plan_run(load_spec("robustness"), wvs7)
    labels = with_perturbations(pd.DataFrame([r.base for r in plan.rows]))["perturbation"]
    assert set(labels) == {p.label for p in standard_perturbations("binary")}
    assert len(plan.rows) == 6 * 6 * 8 * 30 and labels.value_counts().nunique() == 1


def test_an_old_log_line_without_perturbation_columns_keys_as_unperturbed() -> None:
    row = {c: "x" for c in ("model", "country", "language", "demo_language", "program", "question_id")}
    row |= {"k": 5, "seed": 0}
    assert row_key(row) == row_key({**row, "option_order": "surveyed", "answer_words": "agree-disagree",
                                    "template": "default"})  # fmt: skip
    assert row_key(row) != row_key({**row, "option_order": "reversed"})


# --- runs against a loopback server ------------------------------------------------------------------------------


def _policy(body: dict, index: int) -> Reply:
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).digest()
    p = 0.05 + 0.9 * int.from_bytes(digest[:4], "big") / 2**32
    return Reply("A" if p >= 0.5 else "B", (("A", math.log(p)), ("B", math.log(1 - p))))


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """A loopback server behind the alias ``loop``, a cache of the test's own, and a route registry of the test's
    own: the shared clients made here (bound to this server and cache) must not answer a later test's calls."""
    monkeypatch.setattr(routes, "_routes", {})
    with LoopbackServer(policy=_policy) as srv:
        config = tmp_path / "models.toml"
        config.write_text(
            f'[models.{ALIAS}]\nmodel = "openai/loopback"\napi_base = "{srv.api_base}"\nsupports_logprobs = true\n',
            encoding="utf-8",
        )
        monkeypatch.setenv("SELFALIGN_CONFIG", str(config))
        monkeypatch.setenv("SELFALIGN_CACHE_DIR", str(tmp_path / "cache"))
        yield srv


def _loop_spec(**overrides) -> ExperimentSpec:
    data = {
        "name": "robust-test",
        "models": [ALIAS],
        "limit": 8,
        "grid": [{"programs": ["zero-shot", "self-align-chrf"], "k": [3], "countries": ["NGA", "DEU"]}],
    }
    return parse_spec({**data, **overrides})


def test_a_new_axis_value_on_resume_adds_rows_and_repeats_no_call(tmp_path: Path, server: LoopbackServer) -> None:
    out = tmp_path / "run"
    first = run_spec(_loop_spec(), out, concurrency=4, progress=False)
    assert len(first.table) == 2 * 2 * 8 and (first.table["option_order"] == "surveyed").all()
    calls = server.request_count
    # an older log: the same rows without the perturbation columns resume as the unperturbed ones
    lines = [json.loads(line) for line in (out / LOG_FILE).read_text(encoding="utf-8").splitlines()]
    stripped = [{k: v for k, v in row.items() if k not in (*PERTURBATION_COLUMNS, "order_shown")} for row in lines]
    (out / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in stripped), encoding="utf-8")
    again = run_spec(_loop_spec(), out, concurrency=4, progress=False)
    assert server.request_count == calls and again.n_resumed == len(first.table)
    assert (again.table["option_order"] == "surveyed").all() and (again.table["template"] == "default").all()

    more = run_spec(_loop_spec(option_orders=["surveyed", "reversed"]), out, concurrency=4, progress=False)
    assert len(more.table) == 2 * len(first.table) and more.n_resumed == len(first.table)
    new = more.table[more.table["option_order"] == "reversed"]
    assert server.request_count - calls == new["prompt_sha256"].nunique() == more.n_model_calls
    assert not set(new["prompt_sha256"]) & set(first.table["prompt_sha256"])
    logged = read_log(out / LOG_FILE)
    assert len(logged) == len(more.table)  # new rows, none overwritten
    old = first.table.set_index(["program", "country", "question_id"])
    kept = more.table[more.table["option_order"] == "surveyed"].set_index(["program", "country", "question_id"])
    pd.testing.assert_series_equal(kept["probs"].sort_index(), old["probs"].sort_index())
    for row in new.to_dict("records"):
        assert json.loads(row["order_shown"]) == ["disagree", "agree"]
        assert list(json.loads(row["probs"])) == ["agree", "disagree"]  # keyed by code, in the survey's order
    stored = load_run_table(out)
    assert list(stored.columns) == list(COLUMNS)


def test_robustness_summary_matches_a_direct_computation(tmp_path: Path, server: LoopbackServer) -> None:
    spec = _loop_spec(
        grid=[
            {"programs": ["zero-shot", "self-align-chrf"], "k": [3], "countries": ["NGA", "DEU"]},
            {"programs": ["zero-shot", "self-align-chrf"], "k": [3], "countries": ["NGA", "DEU"],
             "option_orders": ["reversed"]},
            {"programs": ["zero-shot", "self-align-chrf"], "k": [3], "countries": ["NGA", "DEU"],
             "templates": ["interview"]},
        ]
    )  # fmt: skip
    table = run_spec(spec, tmp_path / "run", concurrency=4, progress=False).table
    assert has_perturbations(table)
    frame = analysis_table(table)
    robust = robustness_frame(frame, n_boot=500, n_perm=500)
    per = robust[robust["scope"] == "perturbation"].set_index(["variant", "perturbation"])
    assert set(per.index) == {
        (v, p)
        for v in ("zero-shot", "self-align-chrf k=3")
        for p in ("unperturbed", "order=reversed", "template=interview")
    }
    labelled = with_perturbations(frame)
    keys = ["country", "question_id"]
    for variant in ("zero-shot", "self-align-chrf k=3"):
        rows = labelled[labelled["variant"] == variant]
        ref = rows[rows["perturbation"] == "unperturbed"].set_index(keys)
        for label in ("order=reversed", "template=interview"):
            other = rows[rows["perturbation"] == label].set_index(keys).loc[ref.index]
            flips = (other["model_choice"] != ref["model_choice"]).to_numpy(dtype=float) * 100
            expected = bootstrap_ci(flips, ref.index.get_level_values("question_id"), n_boot=500)
            got = per.loc[(variant, label)]
            assert got["flip_pct"] == pytest.approx(expected[0]) and got["flip_n"] == len(ref)
            assert (got["flip_ci_low"], got["flip_ci_high"]) == pytest.approx(expected[1:])
            delta = paired_difference(other["agreement"] * 100, ref["agreement"] * 100,
                                      ref.index.get_level_values("question_id"), n_boot=500, n_perm=500)  # fmt: skip
            assert got["delta_vs_unperturbed"] == pytest.approx(delta.mean_diff)
    chrf = labelled[labelled["variant"] != "zero-shot"]
    zero = labelled[labelled["variant"] == "zero-shot"]
    for label in ("unperturbed", "order=reversed", "template=interview"):
        a = chrf[chrf["perturbation"] == label].set_index(keys).sort_index()
        b = zero[zero["perturbation"] == label].set_index(keys).loc[a.index]
        gain = paired_difference(a["agreement"] * 100, b["agreement"] * 100, a.index.get_level_values("question_id"),
                                 n_boot=500, n_perm=500)  # fmt: skip
        got = per.loc[("self-align-chrf k=3", label)]
        assert got["gain_vs_baseline"] == pytest.approx(gain.mean_diff)
        assert (got["gain_ci_low"], got["gain_ci_high"]) == pytest.approx((gain.ci_low, gain.ci_high))
        assert got["agreement_mean"] == pytest.approx(a["agreement"].mean() * 100)
    program = robust[(robust["scope"] == "program") & (robust["variant"] == "self-align-chrf k=3")].iloc[0]
    means = per.loc["self-align-chrf k=3"]["agreement_mean"]
    assert program["agreement_mean"] == pytest.approx(means.mean())
    assert program["agreement_sd"] == pytest.approx(means.std(ddof=1))
    assert program["n_perturbations"] == 3
    assert program["gain_holds"] == bool((per.loc["self-align-chrf k=3"]["gain_ci_low"] > 0).all())
    assert math.isnan(per.loc[("zero-shot", "unperturbed")]["flip_pct"])  # no flip against itself
    # the pooled summary pairs zero-shot and the program under the same perturbation
    pooled = compare_to_baseline(frame.assign(program=frame["variant"]), "zero-shot", n_boot=200, n_perm=200)
    assert pooled["n_pairs"].iloc[0] == 3 * 2 * 8


def test_compare_robustness_prints_the_summary_and_the_report_shows_it(tmp_path: Path, server, cli) -> None:
    out = tmp_path / "cmp"
    result = cli(
        "compare", "--model", ALIAS, "--countries", "NGA,DEU", "--programs", "zero-shot,self-align-chrf",
        "-k", "2", "--limit", "6", "--robustness", "order=reversed,words=yes-no,template=list", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "self-align-chrf k=2: under each perturbation" in result.output and "Robustness per program" in result.output
    for label in ("order=reversed", "words=yes-no", "template=list", "unperturbed"):
        assert label in result.output
    robust = pd.read_csv(out / ROBUSTNESS_CSV)
    assert set(robust["perturbation"]) == {"unperturbed", "order=reversed", "words=yes-no", "template=list", "all"}
    table = load_run_table(out)
    assert len(table) == 4 * 2 * 2 * 6
    md_path, html_path = render_report(out)
    md = md_path.read_text(encoding="utf-8")
    assert "## Robustness across perturbations of the prompt" in md and "## Robustness per perturbation" in md
    assert "robustness.png" in md and (out / "robustness.png").stat().st_size > 1000
    page = html_path.read_text(encoding="utf-8")
    assert "Robustness per perturbation" in page and page.count("data:image/png;base64,") >= 2
    eval_out = cli("eval", str(tmp_path / "missing.toml"))
    assert eval_out.exit_code != 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("order=backwards", "unknown option order 'backwards'"),
        ("template=fancy", "unknown template 'fancy'; valid: default, list, interview"),
        (
            "colour=red",
            "unknown perturbation 'colour=red'; valid: standard, unperturbed, order=surveyed, order=reversed",
        ),
        ("words=oui-non", "unknown answer words 'oui-non'"),
    ],
)
def test_compare_with_an_unknown_perturbation_is_one_line(tmp_path: Path, value: str, message: str) -> None:
    from click.testing import CliRunner

    from selfalign.cli import cli

    result = CliRunner().invoke(
        cli, ["compare", "--countries", "NGA", "--programs", "zero-shot", "--robustness", value,
              "--out", str(tmp_path / "x")],
    )  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0]
    assert not (tmp_path / "x").exists()


def test_an_options_protocol_compare_rejects_answer_words(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from selfalign.cli import cli

    result = CliRunner().invoke(
        cli, ["compare", "--protocol", "options", "--countries", "NGA", "--programs", "zero-shot",
              "--robustness", "words=yes-no", "--out", str(tmp_path / "x")],
    )  # fmt: skip
    assert result.exit_code == 2 and "apply to the binary protocol only" in result.output


# --- reports of older runs -------------------------------------------------------------------------------------


def test_a_report_of_an_older_run_without_the_new_columns_renders(tmp_path: Path, server: LoopbackServer) -> None:
    spec = _loop_spec(templates=["default", "list"])
    table = run_spec(spec, tmp_path / "run", concurrency=4, progress=False).table
    old = table[table["template"] == "default"].drop(columns=[*PERTURBATION_COLUMNS, "order_shown"])
    folder = tmp_path / "old"
    folder.mkdir()
    old.to_parquet(folder / TABLE_PARQUET, index=False)
    md_path, html_path = render_report(folder)
    md = md_path.read_text(encoding="utf-8")
    assert "## Overall" in md and "Robustness" not in md and not (folder / ROBUSTNESS_CSV).exists()
    assert "Robustness" not in html_path.read_text(encoding="utf-8")
    assert not has_perturbations(old) and not has_perturbations(table.drop(columns=["template"]))
    # the run with its perturbed rows shows the section and the plot, in both formats
    report = build_report(table, n_boot=200, n_perm=200)
    titles = [s[0] for s in report.sections]
    assert "Robustness across perturbations of the prompt" in titles
    assert "robustness.png" in {f.name for f in report.figures}
    assert "Robustness per perturbation" in to_markdown(report) and "Robustness per perturbation" in to_html(report)
    assert np.isfinite(report.robustness["agreement_mean"]).all()
    overall = report.summary[report.summary["scope"] == "overall"].set_index("variant")
    assert overall.loc["zero-shot", "n_probes"] == 2 * 2 * 8  # zero-shot rows kept once per perturbation


@pytest.mark.model
def test_a_perturbed_program_call_answers_in_the_words_shown_and_names_the_code(caplog) -> None:
    import dspy

    from selfalign.models.dspy_bridge import dspy_lm

    program = SelfAlign(strategy="chrf", k=2)
    with dspy.context(lm=dspy_lm("selfalign/gemma-3-270m")), caplog.at_level("WARNING"):
        pred = program(question_id="Q164", country="NGA", option_order="reversed", answer_words="yes-no",
                       template="interview")  # fmt: skip
        plain = program(question_id="Q164", country="NGA")
    assert "not in signature" not in caplog.text
    assert pred.prepared.prompt.options == ("no", "yes") and pred.answer in ("yes", "no")
    assert pred.answer_code == {"yes": "agree", "no": "disagree"}[pred.answer]
    assert pred.prepared.prompt.text.startswith("An interview for a values survey.")
    assert pred.distribution.ok and plain.distribution.ok
    assert pred.prepared.prompt.text != plain.prepared.prompt.text
