"""Learned demonstration selection: concordance, candidate features, the learned part and the DSPy optimizer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dspy
import numpy as np
import pytest

from selfalign.association import MIN_COUNTRIES, QuestionConcordance
from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.optimize import SearchSpace, optimize
from selfalign.optimize.learned import LearnedSelection
from selfalign.programs import (
    AlignmentProgram,
    LearnedDemonstrationsPart,
    Probe,
    ProgramContext,
    SelfAlign,
    dev_pool,
    load_program,
    part_from_config,
    survey_examples,
)
from selfalign.retrieval import FEATURES, DemonstrationRetriever
from selfalign.splits import split_questions
from selfalign.survey import BinarySplit, CountryAnswers, Option, Protocol, Question, ScaleKind, Survey

COUNTRIES = ("ARG", "AUS", "BRA", "CAN", "CHN", "DEU", "EGY", "FRA", "IND", "JPN", "KEN", "MEX", "NGA", "USA")
# agree shares of the test question T and its candidates, per country (in COUNTRIES order)
T = (0.9, 0.8, 0.7, 0.2, 0.9, 0.3, 0.6, 0.8, 0.1, 0.7, 0.9, 0.4, 0.8, 0.6)
AGREES = {
    "T": T,
    "SAME": T,  # the same sides everywhere
    "FLIP": tuple(1 - x for x in T),  # the opposite side everywhere
    "ALL": (0.9,) * 7 + (0.8,) * 7,  # everyone agrees: right wherever T's majority agrees (10 of 13 others)
    "HALF": (0.9, 0.1) * 7,
}
FOUR = ("Strongly agree", "Agree", "Disagree", "Strongly disagree")


def _shares(agree: float) -> dict[str, float]:
    return {"1": 0.6 * agree, "2": 0.4 * agree, "3": 0.5 * (1 - agree), "4": 0.5 * (1 - agree)}


def survey(changes: dict[tuple[str, str], float] | None = None, countries: tuple[str, ...] = COUNTRIES) -> Survey:
    """Binary statements on a four-point scale (1, 2 agree | 3, 4 disagree); ``changes`` overrides agree shares."""
    questions, answers = [], []
    for qid, agrees in AGREES.items():
        options = tuple(Option(str(i + 1), {"en": label}) for i, label in enumerate(FOUR))
        binary = BinarySplit({"en": f"Statement {qid}."}, ("1", "2"), ("3", "4"))
        battery = "B" if qid in ("T", "SAME") else None
        questions.append(
            Question(qid, "Values", ScaleKind.ORDINAL, options, {"en": f"About {qid}?"}, binary=binary, battery=battery)
        )
        for country, agree in zip(COUNTRIES, agrees, strict=True):
            if country in countries:
                answers.append(CountryAnswers(country, qid, _shares((changes or {}).get((country, qid), agree))))
    return Survey.build("learned-test", questions, answers)


# --- concordance ---------------------------------------------------------------------------------------------


def test_concordance_counts_how_often_copying_gives_the_answer_over_the_other_countries() -> None:
    data = survey()
    ids = [q.id for q in data.questions]
    row = dict(zip(ids, QuestionConcordance(data, Protocol.BINARY, ids).row("T", "ARG"), strict=True))
    others = len(COUNTRIES) - 1
    assert row["SAME"] == pytest.approx((others + 0.5) / (others + 1))
    assert row["FLIP"] == pytest.approx(0.5 / (others + 1))
    t_agrees = sum(x > 0.5 for c, x in zip(COUNTRIES, T, strict=True) if c != "ARG")
    assert row["ALL"] == pytest.approx((t_agrees + 0.5) / (others + 1))  # base rates count, unlike a correlation
    assert 0.0 < row["HALF"] < 1.0


def test_concordance_leaves_the_target_out_and_sees_other_countries() -> None:
    ids = [q.id for q in survey().questions]
    base = QuestionConcordance(survey(), Protocol.BINARY, ids)
    # ARG's own answers change (to the test question and to a candidate): its row does not move ...
    changed = QuestionConcordance(survey({("ARG", "T"): 0.1, ("ARG", "HALF"): 0.2}), Protocol.BINARY, ids)
    np.testing.assert_array_equal(base.row("T", "ARG"), changed.row("T", "ARG"))
    # ... every other country's does: ARG now disagrees with T but still agrees with SAME
    assert changed.row("T", "BRA")[ids.index("SAME")] < base.row("T", "BRA")[ids.index("SAME")]


def test_concordance_needs_enough_countries() -> None:
    few = COUNTRIES[: MIN_COUNTRIES - 1]
    ids = [q.id for q in survey().questions]
    with pytest.raises(SelfAlignError, match=r"has 9 countries; value-structure concordance .* at least 11") as raised:
        QuestionConcordance(survey(countries=few), Protocol.BINARY, ids)
    assert "\n" not in str(raised.value)
    with pytest.raises(SelfAlignError, match=r"has 9 countries; .* needs at least 11"):
        DemonstrationRetriever(survey(countries=few)).candidate_features("T", "ARG")
    # 11 countries: the target and 10 others is just enough for every pair
    row = QuestionConcordance(survey(countries=COUNTRIES[: MIN_COUNTRIES + 1]), Protocol.BINARY, ids).row("T", "ARG")
    assert not np.isnan(row).any()


def test_concordance_options_follow_the_copier_of_the_references(wvs7: Survey) -> None:
    from selfalign.references import copy_options

    rows = [q.id for q in wvs7.questions_for(Protocol.OPTIONS)]
    concordance = QuestionConcordance(wvs7, Protocol.OPTIONS, rows)
    test = wvs7.question("Q46")  # ordinal, four options
    row = dict(zip(rows, concordance.row("Q46", "DEU"), strict=True))
    for qid in ("Q1", "Q58", "Q164"):
        hits = n = 0
        for country in wvs7.countries:
            if country == "DEU" or not (wvs7.has_answers(country, qid) and wvs7.has_answers(country, "Q46")):
                continue
            copied = copy_options(wvs7, test, [(qid, wvs7.majority_option(country, qid))])
            n += copied.choice is not None
            hits += copied.choice == wvs7.majority_option(country, "Q46")
        assert row[qid] == pytest.approx((hits + 0.5) / (n + 1)), qid
    assert math.isnan(row["Q57"])  # a nominal candidate cannot be copied onto an ordinal scale
    # a nominal test question: only candidates with the same option list can be copied
    nominal = dict(zip(rows, concordance.row("Q57", "DEU"), strict=True))
    labels = wvs7.question("Q57").option_labels("en")
    same = [q for q in rows if q != "Q57" and wvs7.question(q).option_labels("en") == labels]
    assert all(math.isnan(nominal[q]) for q in rows if q not in same and q != "Q57")


# --- candidate features --------------------------------------------------------------------------------------


def test_candidate_features_describe_every_candidate(wvs7: Survey) -> None:
    retriever = DemonstrationRetriever(wvs7)
    pool = dev_pool()
    features = retriever.candidate_features("Q1", "NGA", pool=pool)
    assert features.names == FEATURES
    assert features.ids == retriever.candidate_ids("Q1", "NGA", pool=pool)
    assert features.values.shape == (len(features.ids), len(FEATURES)) and not np.isnan(features.values).any()
    chrf = retriever.similarities("Q1", strategy="chrf")
    association = retriever.associations("Q1", "NGA")
    for n, qid in enumerate(features.ids):
        assert features.column("chrf")[n] == pytest.approx(chrf[qid] / 100)
        assert features.column("association")[n] == pytest.approx(association[qid])
    assert features.column("bm25").max() <= 1.0 + 1e-12
    assert set(np.unique(features.column("topic"))) <= {0.0, 1.0}
    battery = [qid for qid, b in zip(features.ids, features.column("battery"), strict=True) if b]
    question = wvs7.question("Q1")
    assert battery and all(wvs7.question(q).battery == question.battery for q in battery)
    no_battery = retriever.candidate_features("Q1", "NGA", pool=pool, exclude_battery=True)
    assert set(no_battery.ids) == set(features.ids) - set(battery)
    with pytest.raises(UnknownChoiceError, match="unknown feature 'similarity'"):
        features.column("similarity")


def test_same_options_marks_the_candidates_a_model_can_copy_word_for_word(wvs7: Survey) -> None:
    retriever = DemonstrationRetriever(wvs7)
    pool = dev_pool()
    for qid in ("Q1", "Q33", "Q69"):  # 2, 7 and 20 dev questions with the same options
        features = retriever.candidate_features(qid, "NGA", protocol="options", pool=pool)
        labels = wvs7.question(qid).option_labels("en")
        same = [float(wvs7.question(c).option_labels("en") == labels) for c in features.ids]
        assert list(features.column("same_options")) == same
        assert 0 < sum(same) < len(same)
    binary = retriever.candidate_features("Q1", "NGA", pool=pool)
    assert set(binary.column("same_options")) == {1.0}  # every binary demonstration is answered agree/disagree
    # the named program puts the candidates with the test question's options first, then by concordance
    context = ProgramContext.for_survey(wvs7, pool=pool)
    program = load_program("self-align-concordance-same-options")
    probe = Probe("Q69", "NGA", protocol=Protocol.OPTIONS)
    shown = [d.question_id for d in program.prepare(probe, context).demonstrations]
    features = retriever.candidate_features("Q69", "NGA", protocol="options", pool=pool)
    score = features.column("same_options") + features.column("concordance")
    top = [features.ids[i] for i in np.argsort(-score, kind="stable")[:5]]
    assert shown == top[::-1]  # most concordant last, nearest the question
    labels = wvs7.question("Q69").option_labels("en")
    assert all(wvs7.question(q).option_labels("en") == labels for q in shown)


# --- the learned part ----------------------------------------------------------------------------------------


def test_learned_part_ranks_by_the_weighted_features(wvs7: Survey) -> None:
    context = ProgramContext.for_survey(wvs7, pool=dev_pool())
    probe = Probe("Q164", "NGA")
    correlation = SelfAlign("correlation", 5, context=context).prepare(probe)
    learned = AlignmentProgram([LearnedDemonstrationsPart(weights=(("association", 1.0),))], context=context)
    assert [d.question_id for d in learned.prepare(probe).demonstrations] == [
        d.question_id for d in correlation.demonstrations
    ]
    mixed = LearnedDemonstrationsPart(weights=(("concordance", 2.0), ("chrf", 1.0)), k=3, order="retrieved")
    shown = AlignmentProgram([mixed], context=context).prepare(probe).demonstrations
    features = context.retriever.candidate_features("Q164", "NGA", pool=context.pool)
    scores = 2 * features.column("concordance") + features.column("chrf")
    assert [d.question_id for d in shown] == [features.ids[i] for i in np.argsort(-scores, kind="stable")[:3]]
    assert [d.similarity for d in shown] == pytest.approx(sorted(scores, reverse=True)[:3])
    assert all(d.question_id in context.pool for d in shown)


def test_learned_part_config_round_trip_and_bad_weights() -> None:
    part = LearnedDemonstrationsPart(weights={"concordance": 1.5, "margin": -0.25}, k=3, exclude_battery=True)
    config = part.config()
    assert config == {
        "part": "learned_demonstrations", "weights": {"concordance": 1.5, "margin": -0.25}, "k": 3,
        "answer_form": "majority", "order": "similar_last", "exclude_battery": True,
    }  # fmt: skip
    assert part_from_config(json.loads(json.dumps(config))) == part
    with pytest.raises(UnknownChoiceError, match="unknown feature 'similarity'") as raised:
        LearnedDemonstrationsPart(weights={"similarity": 1.0})
    assert "\n" not in str(raised.value)
    with pytest.raises(SelfAlignError, match="finite"):
        LearnedDemonstrationsPart(weights={"chrf": float("nan")})
    with pytest.raises(SelfAlignError, match="at least one"):
        LearnedDemonstrationsPart(weights={})
    with pytest.raises(SelfAlignError, match="twice"):
        LearnedDemonstrationsPart(weights=(("chrf", 1.0), ("chrf", 2.0)))
    with pytest.raises(UnknownChoiceError, match="similar_last"):
        LearnedDemonstrationsPart(order="best_first")


def test_a_program_file_can_hold_learned_weights(tmp_path: Path) -> None:
    from selfalign.programs import program_from_config
    from selfalign.programs.compiled import check_compatible

    config = {"learned_demonstrations": {"weights": {"concordance": 2.0, "chrf": 0.5}, "k": 3, "order": "retrieved"}}
    program = program_from_config("mine", config)
    (part,) = program.parts
    assert part == LearnedDemonstrationsPart(weights=(("concordance", 2.0), ("chrf", 0.5)), k=3, order="retrieved")
    assert part.uses_value_structure and program.k == 3
    # a compiled program with a learned part refuses a survey with too few countries, in one line
    small = survey(countries=COUNTRIES[:4])
    meta = {"name": "tiny", "survey": small.name, "model": "m", "config": {"parts": [part.config()]}}
    with pytest.raises(SelfAlignError, match=r"has 4 countries; compiled program tiny \(learned selection\) needs"):
        check_compatible(meta, small, None)


def test_the_named_concordance_program_is_what_the_optimizer_chose(wvs7: Survey) -> None:
    named = load_program("self-align-concordance")
    compiled = load_program("compiled:learned-gemma-3-270m-binary", survey=wvs7, model="selfalign/gemma-3-270m")
    assert [p.config() for p in named.parts] == [p.config() for p in compiled.parts]
    assert isinstance(named.parts[0], LearnedDemonstrationsPart) and named.k == 5


def test_learned_part_with_too_few_candidates_is_a_clear_error() -> None:
    context = ProgramContext.for_survey(survey(), pool=frozenset(AGREES))
    program = AlignmentProgram([LearnedDemonstrationsPart(k=5)], context=context)
    with pytest.raises(SelfAlignError, match=r"only 4 candidate demonstrations for k=5"):
        program.prepare(Probe("T", "ARG"))
    assert [d.question_id for d in AlignmentProgram([LearnedDemonstrationsPart(k=1)], context=context).prepare(
        Probe("T", "ARG")).demonstrations] == ["SAME"]  # fmt: skip


# --- the optimizer -------------------------------------------------------------------------------------------


def test_fit_without_a_model_prefers_value_structure(wvs7: Survey) -> None:
    context = ProgramContext.for_survey(wvs7, pool=dev_pool())
    trainset = survey_examples(wvs7, countries=["NGA", "DEU", "JPN", "BRA"], split="dev")
    optimizer = LearnedSelection(passes=1)
    fit = optimizer._fit(context, Protocol.BINARY, trainset)
    singles = fit["single_features"]
    assert max(singles, key=singles.get) == "concordance"
    assert singles["concordance"] > singles["association"] > singles["chrf"]
    assert fit["score"] >= fit["start"]["score"] and "concordance" in fit["weights"]
    no_battery = LearnedSelection(exclude_battery=True, features=("concordance", "battery", "chrf"))
    assert no_battery.features == ("concordance", "chrf")


def test_optimizer_refuses_what_it_cannot_learn_from(wvs7: Survey) -> None:
    context = ProgramContext.for_survey(wvs7, pool=dev_pool())
    student = AlignmentProgram([], context=context)
    test = survey_examples(wvs7, countries=["NGA"], split="test")
    with pytest.raises(SelfAlignError, match=r"trainset question \S+ is not in the student's demonstration pool"):
        LearnedSelection().compile(student, trainset=test)
    with pytest.raises(SelfAlignError, match="needs a trainset"):
        LearnedSelection().compile(student, trainset=[])
    mixed = (
        survey_examples(wvs7, countries=["NGA"], split="dev")[:2]
        + survey_examples(wvs7, countries=["NGA"], split="dev", protocol="options")[:2]
    )
    with pytest.raises(SelfAlignError, match="mixes protocols"):
        LearnedSelection().compile(student, trainset=mixed)
    with pytest.raises(UnknownChoiceError, match="similar_last"):
        LearnedSelection(orders=("best_first",))
    with pytest.raises(SelfAlignError, match="at least 1"):
        LearnedSelection(ks=(0,))
    with pytest.raises(SelfAlignError, match="ranking stage cannot exclude battery"):
        SearchSpace(stages=("config", "ranking"), exclude_battery=True)


def test_cli_refuses_a_battery_free_ranking_and_an_unknown_country(tmp_path: Path, cli) -> None:
    result = cli("optimize", "--countries", "all", "--search", "ranking", "--no-battery", "--out", str(tmp_path))
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "ranking stage cannot exclude battery items" in result.output
    result = cli("optimize", "--countries", "NGA,Atlantis", "--search", "learned", "--out", str(tmp_path))
    assert result.exit_code == 2 and "Atlantis" in result.output
    assert list(tmp_path.iterdir()) == []


# --- real runs on the embedded model -------------------------------------------------------------------------
LEARNED = {"budget": 150, "dev_limit": 10, "seed": 0, "evaluate_test": False, "space": SearchSpace(stages=("learned",))}


def _poisoned(data: Survey) -> Survey:
    """Every country's answers to test questions reversed (option order flipped)."""
    test = set(split_questions(data).test)
    answers = []
    for (c, qid), a in data.answers.items():
        if qid in test:
            codes = data.questions_by_id[qid].option_codes
            a = CountryAnswers(c, qid, {code: a.shares.get(codes[-1 - i], 0.0) for i, code in enumerate(codes)})
        answers.append(a)
    return Survey.build(
        data.name, data.questions, answers, country_names=data.country_names,
        languages=data.languages_info.values(), metadata=data.metadata, native_languages=data.native_languages,
    )  # fmt: skip


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory: pytest.TempPathFactory, wvs7: Survey):
    out = tmp_path_factory.mktemp("learned")
    return optimize(["NGA", "DEU", "JPN"], survey=wvs7, out=out, name="learned-tiny", **LEARNED)


@pytest.mark.model
def test_learned_stage_compiles_a_pooled_program(learned_run, wvs7: Survey) -> None:
    meta = learned_run.meta
    report = meta["learned_selection"]
    assert report["fit"]["countries"] == 3 and report["fit"]["weights"]
    assert report["model_stage"]["planned_calls"] > 0
    assert meta["planned_calls"] <= meta["budget"]
    labels = [row["label"] for row in meta["finalists"]]
    assert labels[0] == "self-align-chrf (paper default)" and any(label.startswith("learned") for label in labels)
    # the fitted part is saved in meta.json and loads by folder path; it serves a country it never saw
    learned = next(r for r in meta["finalists"] if r["origin"] == "learned")
    part = part_from_config(learned["config"]["parts"][-1])
    assert isinstance(part, LearnedDemonstrationsPart) and part.weights
    program = load_program(f"compiled:{learned_run.path}", survey=wvs7, model=meta["model"])
    context = ProgramContext.for_survey(wvs7, pool=dev_pool())
    prepared = program.prepare(Probe("Q164", "EGY"), context)
    assert len(prepared.demonstrations) == program.k and all(
        d.question_id in context.pool for d in prepared.demonstrations
    )


@pytest.mark.model
def test_poisoned_test_answers_do_not_change_the_learned_program(learned_run, wvs7: Survey, tmp_path: Path) -> None:
    poisoned = optimize(["NGA", "DEU", "JPN"], survey=_poisoned(wvs7), out=tmp_path, name="learned-tiny", **LEARNED)
    for key in ("config", "finalists", "learned_selection", "selection"):
        assert poisoned.meta[key] == learned_run.meta[key], key


@pytest.mark.model
def test_teleprompter_compiles_with_dspy_and_the_metric(wvs7: Survey) -> None:
    from selfalign.models.dspy_bridge import dspy_lm

    context = ProgramContext.for_survey(wvs7, pool=dev_pool())
    trainset = survey_examples(wvs7, countries=["NGA", "JPN"], split="dev")
    optimizer = LearnedSelection(ks=(3,), orders=("similar_last",), model_items=6, max_calls=40)
    with dspy.context(lm=dspy_lm("selfalign/gemma-3-270m")):
        compiled = optimizer.compile(SelfAlign("chrf", context=context), trainset=trainset)
        prediction = compiled(question_id="Q164", country="EGY")  # a country it never saw
    assert isinstance(compiled, AlignmentProgram)
    assert [type(p) for p in compiled.parts] == [LearnedDemonstrationsPart]
    assert compiled.selection_report is optimizer.report
    stage = optimizer.report["model_stage"]
    assert 0 < stage["planned_calls"] <= 40 and stage["examples"] == 6
    assert all(0.0 <= r["round_1"]["score"] <= 1.0 + 1e-3 for r in stage["candidates"] if "round_1" in r)
    assert prediction.answer in ("agree", "disagree") and len(prediction.prepared.demonstrations) == 3
