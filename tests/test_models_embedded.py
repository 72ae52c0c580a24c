"""The embedded model end to end with real weights (Gemma 3 270M in-process through llama.cpp)."""

# ruff: noqa: F811
from __future__ import annotations

import math

import pytest
from models_fixtures import make_prompt, result_cache  # noqa: F401

from selfalign import DEFAULT_MODEL
from selfalign.models import ModelClient, ScoringMethod, dspy_lm
from selfalign.models.embedded import get_embedded_model
from selfalign.models.litellm_env import import_litellm
from selfalign.models.wire import SCORES_KEY

pytestmark = pytest.mark.model

RELIGION = "How important is religion in your life?"
NO_GOD = (("Do you believe in God?", "No"), ("How important is God in your life?", "Not at all important"))
YES_GOD = (("Do you believe in God?", "Yes"), ("How important is God in your life?", "Very important"))
FILLER = tuple(
    (f"How important is {topic} in your life?", answer)
    for topic, answer in [
        ("family", "Very important"),
        ("friends", "Rather important"),
        ("leisure time", "Rather important"),
        ("politics", "Not very important"),
        ("work", "Very important"),
        ("your neighbourhood", "Not very important"),
        ("sport", "Not at all important"),
        ("music", "Rather important"),
        ("travel", "Not very important"),
        ("your health", "Very important"),
        ("television", "Not at all important"),
        ("science", "Rather important"),
    ]
)


def test_probabilities_over_options_sum_to_one(result_cache):
    client = ModelClient(cache=result_cache)
    assert client.is_text_model and client.supports_logprobs and client.method_for() is ScoringMethod.LOGPROB
    dist = client.score(make_prompt(RELIGION))
    assert dist.ok and dist.method is ScoringMethod.LOGPROB and dist.error is None
    assert math.isclose(sum(dist.probs), 1.0, abs_tol=1e-9) and all(0 < p < 1 for p in dist.probs)
    assert dist.off_option_mass == 0.0 and dist.cost_usd == 0.0 and dist.prompt_tokens > 0
    assert client.stats.calls == 1
    again = ModelClient(cache=result_cache).score(make_prompt(RELIGION))
    assert again.cached and again.probs == dist.probs


def test_demonstrations_move_the_distribution():
    client = ModelClient(cache=False)
    zero = client.score(make_prompt(RELIGION))
    secular = client.score(make_prompt(RELIGION, demos=NO_GOD))
    religious = client.score(make_prompt(RELIGION, demos=YES_GOD))
    not_at_all = 3
    assert secular.probs[not_at_all] > zero.probs[not_at_all] + 0.15
    assert secular.argmax == not_at_all and zero.argmax != not_at_all  # the answer flips
    assert religious.probs[0] > secular.probs[0] + 0.15  # and the other way round


def test_kv_prefix_reuse_gives_the_numbers_of_a_fresh_evaluation():
    engine = get_embedded_model()
    first = make_prompt(RELIGION, demos=FILLER + NO_GOD)
    second = make_prompt("How important is tradition in your life?", demos=FILLER + NO_GOD)
    engine.score(first.text, first.continuations)
    reused = engine.score(second.text, second.continuations)
    assert reused.reused_tokens >= 128  # whole blocks of the shared demonstrations came from the KV cache
    engine._reset_kv()
    fresh = engine.score(second.text, second.continuations)
    assert fresh.reused_tokens == 0
    for a, b in zip(reused.token_logprobs, fresh.token_logprobs, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    # generation in between leaves the scores as they were
    engine.generate(second.text, max_tokens=4)
    after = engine.score(second.text, second.continuations)
    assert after.mean_logprobs == pytest.approx(fresh.mean_logprobs, abs=1e-4)


def test_multi_token_options_are_scored_token_by_token():
    engine = get_embedded_model()
    prompt = make_prompt(RELIGION)
    scores = engine.score(prompt.text, prompt.continuations)
    # " Not at all important" is several tokens, each a log-probability <= 0
    assert scores.option_tokens[3] >= 3 and len(scores.token_logprobs[3]) == scores.option_tokens[3]
    assert all(lp <= 0 for lps in scores.token_logprobs for lp in lps)


def test_litellm_routes_the_embedded_model_like_any_other():
    litellm = import_litellm()
    reply = litellm.completion(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "The capital of France is"}],
        max_tokens=6,
        temperature=0,
    )
    assert isinstance(reply.choices[0].message.content, str) and reply.usage.completion_tokens > 0
    prompt = make_prompt(RELIGION)
    scored = litellm.completion(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": prompt.text}],
        extra_body={"selfalign_score": {"text": prompt.text, "continuations": list(prompt.continuations)}},
    )
    assert len(scored._hidden_params[SCORES_KEY]["token_logprobs"]) == 4


def test_greedy_and_sampled_answers_from_the_base_model():
    prompt = make_prompt(RELIGION, demos=NO_GOD)
    greedy = ModelClient(cache=False, method="greedy").score(prompt)
    assert greedy.method is ScoringMethod.GREEDY and greedy.ok and greedy.argmax == 3
    sample = ModelClient(cache=False, method="sample", n_samples=5, temperature=0.8).score(prompt)
    assert sample.method is ScoringMethod.SAMPLE and sample.extra["n"] == 5
    assert sample.ok or sample.invalid  # counted, never coerced
    if sample.ok:
        assert math.isclose(sum(sample.probs), 1.0)


def test_too_long_prompt_is_an_error_result_not_an_exception():
    dist = ModelClient(cache=False).score(make_prompt("word " * 9000))
    assert not dist.ok and dist.error is not None and "context" in dist.error


def test_generation_and_dspy_through_the_cache(result_cache, tmp_path):
    client = ModelClient(cache=result_cache)
    text = client.complete([{"role": "user", "content": "Question: What colour is the sky?\nAnswer:"}], max_tokens=8)
    assert isinstance(text, str) and text
    assert (
        client.complete([{"role": "user", "content": "Question: What colour is the sky?\nAnswer:"}], max_tokens=8)
        == text
    )
    assert client.stats.calls == 1 and client.stats.cache_hits == 1
    lm = dspy_lm(cache_dir=tmp_path / "dspy")
    out = lm("Question: What colour is grass?\nAnswer:", max_tokens=8)
    assert isinstance(out[0], str)
    assert lm("Question: What colour is grass?\nAnswer:", max_tokens=8) == out
