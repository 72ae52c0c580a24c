"""selfalign optimize and compiled programs: save/load, compatibility checks, bad input, leakage, real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfalign.errors import SelfAlignError
from selfalign.optimize import (
    Candidate,
    SearchSpace,
    compiled_programs,
    load_compiled,
    optimize,
    paper_default,
    save_compiled,
)
from selfalign.optimize.search import dev_halves
from selfalign.programs import Probe, ProgramContext, load_program
from selfalign.programs.compiled import build_compiled
from selfalign.splits import split_questions
from selfalign.survey import CountryAnswers, Survey

MODEL = "selfalign/gemma-3-270m"


def _meta(name: str, candidate: Candidate, survey: str = "wvs7", model: str = MODEL) -> dict:
    return {
        "format_version": 1,
        "name": name,
        "description": "test program",
        "survey": survey,
        "countries": ["EGY"],
        "model": model,
        "protocol": "binary",
        "config": candidate.config(),
    }


def _ranked_candidate(wvs7: Survey) -> Candidate:
    split = split_questions(wvs7)
    ranking = [q for q in split.dev if wvs7.has_answers("EGY", q)][::-1]
    return Candidate(
        label="learned",
        origin="ranking",
        parts=[
            {"part": "persona"},
            {
                "part": "ranked_demonstrations",
                "ranking": ranking,
                "k": 3,
                "answer_form": "majority",
                "order": "similar_last",
                "rerank": "chrf",
                "shortlist": 40,
            },
        ],
        instructions="Answer as the respondent described would.",
        fixed_demos=[
            {"question_id": split.dev[0], "answer_code": "agree", "question": "q", "options": ["a", "b"], "answer": "a"}
        ],
    )


def test_save_load_round_trip(tmp_path: Path, wvs7: Survey) -> None:
    candidate = _ranked_candidate(wvs7)
    program = candidate.build(name="compiled:rt")
    folder = save_compiled(program, _meta("rt", candidate), tmp_path / "rt")
    assert (folder / "program.json").is_file() and (folder / "meta.json").is_file()
    state = json.loads((folder / "program.json").read_text())
    assert state["answer"]["signature"]["instructions"] == "Answer as the respondent described would."
    loaded = load_compiled(str(folder), survey=wvs7, model=MODEL)
    assert loaded.config()["parts"] == program.config()["parts"]
    assert loaded.config()["fixed_demos"] == program.config()["fixed_demos"]
    assert loaded.answer.signature.instructions == program.answer.signature.instructions
    split = split_questions(wvs7)
    context = ProgramContext(wvs7, frozenset(split.dev))
    for qid in split.test[:5]:
        if wvs7.has_answers("EGY", qid):
            a = program.prepare(Probe(qid, "EGY"), context).prompt
            b = loaded.prepare(Probe(qid, "EGY"), context).prompt
            assert a == b
            assert "Answer as the respondent described would." in a.text


def test_save_is_atomic_and_replaces(tmp_path: Path, wvs7: Survey) -> None:
    candidate = _ranked_candidate(wvs7)
    program = candidate.build()
    save_compiled(program, _meta("x", candidate), tmp_path / "x")
    save_compiled(program, _meta("x", candidate) | {"description": "second"}, tmp_path / "x")
    assert json.loads((tmp_path / "x" / "meta.json").read_text())["description"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary or old folders left


def test_wrong_survey_or_model_is_a_clear_error(tmp_path: Path, wvs7: Survey) -> None:
    candidate = _ranked_candidate(wvs7)
    folder = save_compiled(candidate.build(), _meta("w", candidate), tmp_path / "w")
    with pytest.raises(SelfAlignError, match="compiled for survey wvs7, not other"):
        load_compiled(str(folder), survey="other")
    with pytest.raises(SelfAlignError, match="compiled for model selfalign/gemma-3-270m, not openai/gpt-4o"):
        load_compiled(str(folder), model="openai/gpt-4o")
    few = Survey.build("wvs7", [q for q in wvs7.questions if q.id != candidate.parts[1]["ranking"][0]], [
        a for a in wvs7.answers.values() if a.question_id != candidate.parts[1]["ranking"][0]
    ], country_names=wvs7.country_names, languages=wvs7.languages_info.values())  # fmt: skip
    with pytest.raises(SelfAlignError, match="refers to questions"):
        load_compiled(str(folder), survey=few)


def test_listed_and_loadable_by_name(wvs7: Survey) -> None:
    from selfalign.paths import user_programs_dir

    candidate = _ranked_candidate(wvs7)
    save_compiled(candidate.build(), _meta("listed-test", candidate), user_programs_dir() / "listed-test")
    assert "listed-test" in compiled_programs()
    program = load_program("compiled:listed-test", survey=wvs7, model=MODEL)
    assert program.program_name == "compiled:listed-test"
    with pytest.raises(SelfAlignError, match="compiled for model"):
        load_program("compiled:listed-test", survey=wvs7, model="ollama/llama3")
    with pytest.raises(SelfAlignError, match="unknown compiled program"):
        load_program("compiled:no-such-program")


def test_pruned_ranking_with_every_question_equals_chrf(wvs7: Survey) -> None:
    """A learned shortlist that keeps every dev question re-ranked by chrF++ is exactly self-align-chrf."""
    split = split_questions(wvs7)
    ranking = [q for q in split.dev if wvs7.has_answers("EGY", q)]
    pruned = Candidate("pruned", "ranking", [{"part": "ranked_demonstrations", "ranking": ranking[::-1], "k": 5,
                       "answer_form": "majority", "order": "similar_last", "rerank": "chrf",
                       "shortlist": len(ranking)}]).build()  # fmt: skip
    chrf = paper_default().build()
    context = ProgramContext(wvs7, frozenset(split.dev))
    for qid in split.test[:8]:
        if wvs7.has_answers("EGY", qid):
            assert pruned.prepare(Probe(qid, "EGY"), context).prompt == chrf.prepare(Probe(qid, "EGY"), context).prompt


def test_dev_halves_partition_dev_only(wvs7: Survey) -> None:
    split = split_questions(wvs7)
    search, validation = dev_halves(split, wvs7, seed=3)
    assert sorted(search + validation) == sorted(split.dev)
    assert not set(search) & set(validation)
    assert not (set(search) | set(validation)) & set(split.test)
    assert abs(len(search) - len(validation)) <= len({wvs7.questions_by_id[q].topic for q in split.dev})


def test_budget_too_small_is_an_error_and_saves_nothing(tmp_path: Path, cli) -> None:
    with pytest.raises(SelfAlignError, match="cannot evaluate even one candidate"):
        optimize("EGY", budget=20, out=tmp_path)
    assert list(tmp_path.iterdir()) == []
    result = cli("optimize", "--country", "EGY", "--budget", "5", "--out", str(tmp_path), "--quiet")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "cannot evaluate even one candidate" in result.output
    assert list(tmp_path.iterdir()) == []


def test_too_few_dev_questions_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SelfAlignError, match="has only 6 dev questions"):
        optimize("EGY", dev_limit=6, out=tmp_path)
    with pytest.raises(SelfAlignError, match="unknown search stage 'greedy'"):
        SearchSpace(stages=("greedy",))
    with pytest.raises(SelfAlignError, match="invalid compiled program name"):
        optimize("EGY", name="../escape", out=tmp_path)
    with pytest.raises(SelfAlignError, match="unknown country"):
        optimize("XXY", out=tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- real runs on the embedded model -----------------------------------------------------------------------
TINY = {"budget": 60, "dev_limit": 12, "seed": 0, "test_limit": 12}


def _poisoned(survey: Survey, country: str) -> Survey:
    """The survey with the country's answers to test questions reversed (option order flipped)."""
    split = split_questions(survey)
    test = set(split.test)
    answers = []
    for (c, qid), a in survey.answers.items():
        if c == country and qid in test:
            codes = survey.questions_by_id[qid].option_codes
            flipped = {code: a.shares.get(codes[-1 - i], 0.0) for i, code in enumerate(codes)}
            a = CountryAnswers(c, qid, flipped, a.n_respondents, a.weighted, a.source)
        answers.append(a)
    return Survey.build(
        survey.name, survey.questions, answers, country_names=survey.country_names,
        languages=survey.languages_info.values(), metadata=survey.metadata, native_languages=survey.native_languages,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, wvs7: Survey):
    out = tmp_path_factory.mktemp("compiled")
    return optimize("EGY", survey=wvs7, out=out, **TINY)


@pytest.mark.model
def test_tiny_real_optimize(tiny_run, wvs7: Survey) -> None:
    meta = tiny_run.meta
    assert tiny_run.path is not None and (tiny_run.path / "program.json").is_file()
    assert meta["calls_spent"] <= meta["planned_calls"] <= TINY["budget"]
    assert meta["survey"] == "wvs7" and meta["countries"] == ["EGY"] and meta["model"] == MODEL
    assert meta["test_score"]["n_items"] == TINY["test_limit"] and meta["test_limit"] == TINY["test_limit"]
    assert 0.0 <= meta["test_score"]["agreement"] <= 1.0
    assert meta["dev_score"]["validation"]["n_items"] == TINY["dev_limit"] // 2
    assert meta["finalists"][0]["label"].startswith("self-align-chrf")
    loaded = load_compiled(str(tiny_run.path), survey=wvs7, model=MODEL)
    assert loaded.config()["parts"] == tiny_run.program.config()["parts"]
    assert build_compiled(meta).config()["parts"] == meta["config"]["parts"]


@pytest.mark.model
def test_poisoned_test_answers_do_not_change_the_compiled_program(tiny_run, wvs7: Survey, tmp_path: Path) -> None:
    poisoned = _poisoned(wvs7, "EGY")
    test_ids = [q for q in split_questions(wvs7).test if wvs7.has_answers("EGY", q)][: TINY["test_limit"]]
    flipped = sum(wvs7.majority_side("EGY", q) != poisoned.majority_side("EGY", q) for q in test_ids)
    assert flipped > len(test_ids) // 2  # the poison is real
    again = optimize("EGY", survey=poisoned, out=tmp_path, **TINY)
    assert again.meta["config"] == tiny_run.meta["config"]
    assert again.meta["finalists"] == tiny_run.meta["finalists"]
    assert again.meta["search_log"] == tiny_run.meta["search_log"]
    assert again.meta["test_score"]["agreement"] != tiny_run.meta["test_score"]["agreement"]
    assert (
        json.loads((again.path / "program.json").read_text())["answer"]
        == json.loads((tiny_run.path / "program.json").read_text())["answer"]
    )


@pytest.mark.model
def test_compiled_program_in_the_runner(tiny_run, tmp_path: Path) -> None:
    from selfalign.runner import run_spec
    from selfalign.specs import parse_spec

    name = f"compiled:{tiny_run.path}"
    spec = parse_spec({
        "name": "t", "survey": "wvs7", "protocol": "binary", "split": "test", "limit": 2,
        "models": [MODEL], "grid": [{"programs": ["self-align-chrf", name], "k": [5],
                                     "countries": ["EGY"]}],
    }, source="test")  # fmt: skip
    result = run_spec(spec, tmp_path / "run", progress=False)
    table = result.table
    assert set(table["program"]) == {"self-align-chrf", name}
    assert table["ok"].all()


@pytest.mark.model
def test_dspy_stage_fixed_demonstrations_come_from_dev(wvs7: Survey, tmp_path: Path) -> None:
    result = optimize(
        "EGY", survey=wvs7, out=tmp_path, budget=80, dev_limit=12, evaluate_test=False,
        space=SearchSpace(stages=("dspy",)),
    )  # fmt: skip
    meta = result.meta
    labels = [f["label"] for f in meta["finalists"]]
    assert any(label.startswith("dspy LabeledFewShot") for label in labels)
    stages = {entry["stage"] for entry in meta["search_log"]}
    assert "dspy/labeled" in stages and stages & {"dspy/bootstrap", "dspy/random"}, stages
    split = split_questions(wvs7)
    for finalist in meta["finalists"]:
        for demo in finalist["config"]["fixed_demos"]:
            assert demo["question_id"] in split.dev
            assert demo["answer_code"] == wvs7.majority_side("EGY", demo["question_id"])
    assert meta["planned_calls"] <= 80


# --- the objective -------------------------------------------------------------------------------------------


def test_the_objective_decides_what_a_score_is_ranked_by(tmp_path: Path, cli) -> None:
    import dspy

    from selfalign.models.types import AnswerDistribution, ScoringMethod
    from selfalign.optimize.evaluate import OBJECTIVES, Item, Outcome, aggregate, objective_value
    from selfalign.programs import JS_TIE_WEIGHT, js_metric, metric

    assert OBJECTIVES == ("agreement", "js")
    sharp, spread = Outcome(1.0, 0.40, ()), Outcome(0.0, 0.90, ())
    assert sharp.value() > spread.value() and sharp.value("js") < spread.value("js")
    assert objective_value(0.5, 0.8, "js") == pytest.approx(0.8 + JS_TIE_WEIGHT * 0.5)
    items = [Item("EGY", "Q1"), Item("EGY", "Q2")]
    by_js = aggregate(zip(items, [sharp, spread], strict=True), "js")
    assert by_js.objective == pytest.approx(0.65 + JS_TIE_WEIGHT * 0.5)
    assert aggregate(zip(items, [sharp, spread], strict=True)).objective == pytest.approx(0.5 + JS_TIE_WEIGHT * 0.65)
    example = dspy.Example(shares=[0.7, 0.3])
    answer = dspy.Prediction(distribution=AnswerDistribution(("a", "b"), (0.6, 0.4), ScoringMethod.LOGPROB))
    js = js_metric(example, answer) - JS_TIE_WEIGHT * 1.0
    assert 0.8 < js < 1.0 and metric(example, answer) == pytest.approx(1.0 + JS_TIE_WEIGHT * js)
    with pytest.raises(SelfAlignError, match=r"unknown objective 'kl'.*agreement, js"):
        objective_value(0.5, 0.5, "kl")
    with pytest.raises(SelfAlignError, match=r"unknown objective 'kl'.*agreement, js"):
        optimize("EGY", objective="kl", out=tmp_path)
    result = cli("optimize", "--country", "EGY", "--objective", "kl", "--out", str(tmp_path), "--quiet")
    assert result.exit_code == 2 and "'kl' is not one of 'agreement', 'js'" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.model
def test_a_search_by_js_similarity_chooses_by_it(wvs7: Survey, tmp_path: Path) -> None:
    result = optimize(
        "EGY", survey=wvs7, protocol="options", objective="js", out=tmp_path, evaluate_test=False,
        space=SearchSpace(stages=("config",)), budget=60, dev_limit=12, seed=0,
    )  # fmt: skip
    meta = result.meta
    assert meta["objective"] == "js"
    validated = [f for f in meta["finalists"] if f["validation"] is not None]
    best = max(validated, key=lambda f: f["validation"]["js_similarity"])
    selection = meta["selection"]
    assert selection["best_on_validation"] == best["label"]
    if best["label"] != meta["finalists"][0]["label"]:  # the paired test is then on JS similarity
        assert "ci_js" in selection and "diff_vs_default_js" in selection
