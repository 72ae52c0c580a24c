"""Programs are DSPy modules that call their predictor: the DSPy LM chooses the model, DSPy's tools work on them,
and the numbers are those of the pre-refactor path, bit for bit."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import dspy
import pytest
from models_fixtures import loopback  # noqa: F401  (fixture)

from selfalign.errors import SelfAlignError
from selfalign.models import dspy_lm, route_client
from selfalign.models.loopback import Reply
from selfalign.programs import (
    AlignmentProgram,
    DemonstrationsPart,
    PersonaPart,
    Probe,
    ProgramContext,
    RankedDemonstrationsPart,
    SelfAlign,
    ZeroShot,
    available_program_names,
    dev_pool,
    load_program,
    metric,
    survey_examples,
)
from selfalign.splits import split_questions

EMBEDDED = "selfalign/gemma-3-270m"
RECORDED = Path(__file__).parent / "data" / "dspy_identity_before.json"


def _recorded_program(name: str, dev: tuple[str, ...]) -> AlignmentProgram:
    """The programs of the recorded cases, built as the recording script (at 89cd7c7) built them."""
    if name == "chrf-k3-distribution":
        return AlignmentProgram([DemonstrationsPart("chrf", 3, "distribution", "retrieved", True)], name=name)
    if name == "ranked":
        part = RankedDemonstrationsPart(tuple(dev[:40]), 4, "majority", "similar_last", "chrf", 12)
        return AlignmentProgram([PersonaPart(), part], name=name)
    if name == "fixed-demos":
        program = AlignmentProgram([DemonstrationsPart("bm25", 2)], name=name)
        program.answer.demos = [
            {"question_id": "Q1", "answer_code": "agree"},
            {"question_id": "Q164", "answer_code": "disagree"},
            {"question_id": "Q57", "answer_code": "agree"},
        ]
        return program
    return load_program(name)


@pytest.mark.model
def test_same_numbers_as_before_the_refactor(wvs7, tmp_path: Path) -> None:
    """57 real probes (10 programs: named, distribution answers, learned ranking, fixed demonstrations; binary
    and options; en, ja, ar with English demonstrations, hi), recorded on the old path, through the new one:
    DSPy LM -> LiteLLM -> provider -> client, from an empty cache; and again through the batched path."""
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    split = split_questions(wvs7, protocol="binary", seed=0, test_fraction=0.3)
    contexts = {"all": ProgramContext.for_survey(wvs7), "dev": ProgramContext.for_survey(wvs7, pool=split.dev)}
    lm = dspy_lm(EMBEDDED, cache_dir=tmp_path / "cache")
    prepared = []
    with dspy.context(lm=lm):
        for case in recorded["cases"]:
            program = _recorded_program(case["program"], split.dev)
            program.context = contexts[case["pool"]]
            probe = dict(question_id=case["question_id"], country=case["country"], lang=case["lang"])
            probe |= dict(demo_lang=case["demo_lang"], protocol=case["protocol"], seed=case["seed"])
            pred = program(**probe)
            where = f"{case['program']} {case['country']} {case['question_id']}"
            assert pred.prepared.prompt.text == case["text"], where
            assert [dict(m) for m in pred.prepared.prompt.messages] == case["messages"], where
            assert list(pred.distribution.probs) == case["probs"], where  # bit-identical
            assert pred.distribution.method.value == case["method"] and not pred.distribution.cached
            assert [d.question_id for d in pred.prepared.demonstrations] == case["demo_ids"], where
            prepared.append((program.prepare(Probe(**{**probe, "protocol": _protocol(probe)})), case))
    # the runner's batched path renders with the same code and gets the same numbers (from the same cache)
    client = route_client(lm)
    results = client.score_many([p.prompt for p, _ in prepared])
    assert [list(r.probs) for r in results] == [c["probs"] for _, c in prepared]
    assert all(r.cached for r in results)


def _protocol(probe: dict) -> object:
    from selfalign.survey import Protocol

    return Protocol(probe["protocol"])


@pytest.mark.model
def test_the_dspy_user_script(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's script: the configured LM answers (an unreachable one fails; no other model steps in),
    keyword inputs work, dspy.inspect_history shows the prompt."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    program = SelfAlign(strategy="chrf", k=3)
    dspy.configure(lm=dspy_lm("openai/does-not-exist", max_retries=0))
    try:
        failed = program(Probe("Q164", "NGA"))
        assert failed.answer is None and failed.distribution.error
        assert not failed.distribution.ok
        dspy.configure(lm=dspy_lm(EMBEDDED))
        pred = program(question_id="Q164", country="NGA")
    finally:
        dspy.configure(lm=None)
    assert pred.answer in ("agree", "disagree") and pred.distribution.ok
    assert pred.answer_code == pred.answer and pred.distribution.method.value == "logprob"
    capsys.readouterr()
    dspy.inspect_history(n=1)
    shown = capsys.readouterr().out
    assert 'Question: Do you agree or disagree with the following statement? "God has an important place' in shown
    assert shown.count("Question:") == 4  # three demonstrations and the test question
    assert pred.prepared.prompt.text.strip() in shown.replace("\x1b[0m", "")


@pytest.mark.model
def test_default_lm_is_the_embedded_model() -> None:
    dspy.configure(lm=None)
    pred = ZeroShot()(question_id="Q57", country="NLD")
    assert pred.distribution.ok
    assert dspy.settings.lm is None
    history = dspy.clients.base_lm.GLOBAL_HISTORY[-1]
    assert history["model"].startswith("selfalign/cached/selfalign/gemma-3-270m")


def test_bad_inputs_are_one_line_errors() -> None:
    program = ZeroShot()
    with pytest.raises(SelfAlignError, match="needs country") as missing:
        program(question_id="Q57")
    assert "\n" not in str(missing.value)
    with pytest.raises(SelfAlignError, match="unknown program input 'questionid'"):
        program(questionid="Q57", country="NLD")
    with (
        dspy.context(lm="openai/gpt-4o-mini"),
        pytest.raises(SelfAlignError, match="not a DSPy LM \\('openai/gpt-4o-mini'\\)"),
    ):
        program(question_id="Q57", country="NLD")
    with pytest.raises(SelfAlignError, match="unknown protocol"):
        program(question_id="Q57", country="NLD", protocol="multiple")


def _letter_policy(body: dict, index: int) -> Reply:
    """Generations get a ChatAdapter-formatted description; scoring requests the letter B."""
    if body.get("logprobs"):
        return Reply("B", (("B", -0.105360516), ("A", -2.302585093)))
    return Reply("[[ ## description ## ]]\nA retired schoolteacher who lives in Lagos.\n\n[[ ## completed ## ]]")


class DescribedRespondent(dspy.Module):
    """A user's module: one predictor writes a respondent description, a selfalign program answers as them."""

    def __init__(self) -> None:
        super().__init__()
        self.describe = dspy.Predict("country -> description")
        self.survey = SelfAlign(strategy="chrf", k=2)

    def forward(self, question_id: str, country: str) -> dspy.Prediction:
        description = self.describe(country=country).description
        return self.survey(question_id=question_id, country=country, respondent=description)


def test_composition_with_another_dspy_module(loopback, tmp_path: Path) -> None:  # noqa: F811
    server = loopback(policy=_letter_policy)
    lm = dspy_lm("openai/loopback", api_base=server.api_base, cache_dir=tmp_path / "cache")
    with dspy.context(lm=lm):
        pred = DescribedRespondent()(question_id="Q164", country="NGA")
    assert pred.distribution.ok and pred.answer == "disagree"  # B is the second option
    assert pred.distribution.probs == pytest.approx((0.1, 0.9), abs=1e-9)  # e^-2.303 : e^-0.105
    generation, scoring = server.requests
    assert "description" in json.dumps(generation["messages"]) and not generation.get("logprobs")
    assert scoring["logprobs"] and scoring["top_logprobs"] == 20
    system = scoring["messages"][0]["content"]
    assert "A retired schoolteacher who lives in Lagos." in system  # the description became the respondent
    assert len(scoring["messages"]) == 1 + 2 * 2 + 1  # system, two demonstrations as turns, the question
    assert pred.prepared.persona and pred.prepared.demo_ids


def test_foreign_lm_without_logprobs_falls_back_to_sampling(loopback) -> None:  # noqa: F811
    server = loopback(policy=lambda body, i: Reply("A"), logprobs_supported=False)
    lm = dspy.LM("openai/loopback", api_base=server.api_base, api_key="no-key", cache=False, num_retries=0)
    pred = ZeroShot()(question_id="Q57", country="NLD", lm=lm)
    assert pred.distribution.ok and pred.answer == "agree"
    assert pred.distribution.method.value == "sample"
    assert pred.distribution.extra["fallback_from"] == "logprob"
    first, *samples = server.requests
    assert first["logprobs"] and len(samples) == 20  # DSPy sends n = 20 as twenty requests here
    assert all(r["temperature"] == 1.0 and not r.get("logprobs") for r in samples)
    ZeroShot()(question_id="Q1", country="NLD", lm=lm)  # remembered: the next call samples at once
    assert len(server.requests) == 41 and not any(r.get("logprobs") for r in server.requests[21:])


@pytest.mark.model
def test_evaluate_and_bootstrap_with_threads(wvs7, tmp_path: Path) -> None:
    lm = dspy_lm(EMBEDDED, cache_dir=tmp_path / "cache")
    pool = dev_pool(wvs7)
    program = SelfAlign(strategy="chrf", k=2, context=ProgramContext.for_survey(wvs7, pool=pool))
    test = survey_examples(wvs7, countries=["NGA", "JPN"], split="test")[::9][:8]
    dev = survey_examples(wvs7, countries=["NGA"], split="dev")[::7][:6]
    with dspy.context(lm=lm):
        result = dspy.Evaluate(devset=test, metric=metric, num_threads=4, display_progress=False)(program)
        assert 0 <= result.score <= 100.1 and len(result.results) == len(test)
        zero = ZeroShot(context=program.context)
        optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=2, max_labeled_demos=2)
        compiled = optimizer.compile(zero, trainset=dev)
        demos = compiled.answer.demos
        assert demos and all(d["question_id"] in pool for d in demos)
        boot = [d for d in demos if d.get("augmented")]
        for demo in boot:  # bootstrapped from the model's own traces: the answers it gave, which were right
            assert demo["answer_code"] == wvs7.majority_side("NGA", demo["question_id"])
        pred = compiled(question_id=test[0].question_id, country="NGA")
        assert pred.distribution.ok
        assert set(pred.prepared.demo_ids) >= {
            d["question_id"] for d in demos if d["question_id"] != test[0].question_id
        }
        random_search = dspy.BootstrapFewShotWithRandomSearch(
            metric=metric, max_bootstrapped_demos=1, max_labeled_demos=2, num_candidate_programs=2, num_threads=4
        )
        best = random_search.compile(zero, trainset=dev, valset=test[:4])
        # zero-shot, labelled-only, unshuffled and the random sets, each scored by the metric on the valset
        assert len(best.candidate_programs) >= 4
        assert all(0 <= c["score"] <= 100.1 for c in best.candidate_programs)
    # save / load round trip: the demonstrations and the prompts they make
    path = tmp_path / "program.json"
    compiled.save(str(path))
    saved = json.loads(path.read_text())["answer"]["demos"]
    assert all(set(d) <= {"question_id", "answer_code", "country", "question", "options", "language",
                          "statement", "answer", "augmented", "lang", "protocol"} for d in saved)  # fmt: skip
    loaded = ZeroShot(context=program.context)
    loaded.load(str(path))
    probe = Probe(test[1].question_id, "JPN", lang="ja")
    assert loaded.prepare(probe).prompt == compiled.prepare(probe).prompt


def test_labeled_few_shot_demos_are_shown_in_the_probe_language(wvs7) -> None:
    dev = survey_examples(wvs7, countries=["EGY"], split="dev")
    compiled = dspy.LabeledFewShot(k=3).compile(ZeroShot(), trainset=dev)
    prepared = compiled.prepare(Probe("Q164", "EGY", lang="ar"))
    assert len(prepared.demo_ids) == 3
    arabic = wvs7.side_labels("ar")
    for demo in prepared.demos:
        assert demo["language"] == "ar" and demo["answer"] in arabic
        code = wvs7.majority_side("EGY", demo["question_id"])
        assert demo["answer"] == arabic[0 if code == "agree" else 1]
    options = compiled.prepare(Probe("Q164", "EGY", protocol="options"))  # another protocol: option labels
    assert options.prompt.options == wvs7.question("Q164").option_labels("en")


def test_committed_compiled_programs_load_and_round_trip(wvs7, tmp_path: Path) -> None:
    names = [n for n in available_program_names() if n.startswith("compiled:")]
    assert names
    for name in names:
        program = load_program(name, survey=wvs7, model=EMBEDDED)
        program.save(str(tmp_path / "p.json"))
        again = AlignmentProgram(program.parts, name=name)
        again.load(str(tmp_path / "p.json"))
        assert again.config() == program.config()


@pytest.mark.model
def test_gepa_compiles_a_program_with_a_reflection_lm(loopback, wvs7, tmp_path: Path) -> None:  # noqa: F811
    def reflection(body: dict, index: int) -> Reply:
        return Reply("[[ ## new_instruction ## ]]\nAnswer as the typical adult of the country answers.\n\n"
                     "[[ ## completed ## ]]")  # fmt: skip

    server = loopback(policy=reflection)
    from selfalign.optimize.dspy_opt import feedback_metric

    reflector = dspy_lm("openai/reflector", api_base=server.api_base, cache_dir=tmp_path / "cache")
    program = ZeroShot(context=ProgramContext.for_survey(wvs7, pool=dev_pool(wvs7)))
    dev = survey_examples(wvs7, countries=["NGA"], split="dev")[::11][:4]
    logging.getLogger("dspy").setLevel(logging.ERROR)
    with dspy.context(lm=dspy_lm(EMBEDDED, cache_dir=tmp_path / "cache")), _silenced():
        gepa = dspy.GEPA(metric=feedback_metric, reflection_lm=reflector, max_metric_calls=16, num_threads=2)
        compiled = gepa.compile(program, trainset=dev, valset=dev)
    assert server.request_count >= 1  # the reflection LM was asked for a new instruction
    instructions = compiled.answer.signature.instructions
    assert instructions in (
        program.answer.signature.instructions,
        "Answer as the typical adult of the country answers.",
    )
    if instructions != program.answer.signature.instructions:
        assert instructions in compiled.prepare(Probe("Q57", "NGA")).prompt.text


@pytest.mark.model
def test_mipro_compiles_a_program_with_a_prompt_model(loopback, wvs7, tmp_path: Path) -> None:  # noqa: F811
    proposed = "Answer as most people in this country would."
    server = loopback(
        policy=lambda body, i: Reply(f"[[ ## proposed_instruction ## ]]\n{proposed}\n\n[[ ## completed ## ]]")
    )
    prompt_lm = dspy_lm("openai/proposer", api_base=server.api_base, cache_dir=tmp_path / "cache")
    task_lm = dspy_lm(EMBEDDED, cache_dir=tmp_path / "cache")
    program = ZeroShot(context=ProgramContext.for_survey(wvs7, pool=dev_pool(wvs7)))
    dev = survey_examples(wvs7, countries=["NGA"], split="dev")[::9][:6]
    logging.getLogger("dspy").setLevel(logging.ERROR)
    with dspy.context(lm=task_lm), _silenced():
        optimizer = dspy.MIPROv2(
            metric=metric, prompt_model=prompt_lm, task_model=task_lm, auto=None, num_candidates=2,
            max_bootstrapped_demos=1, max_labeled_demos=1, num_threads=2, verbose=False,
        )  # fmt: skip
        compiled = optimizer.compile(
            program, trainset=dev, valset=dev[:4], num_trials=2, minibatch=False, program_aware_proposer=False,
            data_aware_proposer=False,
        )  # fmt: skip
    assert server.request_count >= 1  # the prompt model proposed instructions
    assert compiled.answer.signature.instructions in (program.answer.signature.instructions, proposed)
    pred = compiled(question_id=dev[0].question_id, country="NGA")
    assert pred.distribution.ok


class _silenced:
    def __enter__(self) -> None:
        import contextlib

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
