# ruff: noqa: F811
"""The completion method against a loopback text-completions server: parsing by character offsets, batching,
failures per request, too few choices, context limits, servers that lack echo, the cache per prompt."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from models_fixtures import loopback, make_prompt, result_cache  # noqa: F401

from selfalign.errors import ModelError, SelfAlignError
from selfalign.models import ModelClient, ScoringMethod, completions
from selfalign.models.loopback import default_token_logprob, split_tokens

PROMPTS = [make_prompt(f"How important is topic {i} in your life?") for i in range(7)]


def client(server, cache=False, **kw) -> ModelClient:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("method", "completion")
    return ModelClient("openai/base-model", api_base=server.api_base, cache=cache, **kw)


def expected(prompt) -> tuple[float, ...]:
    """By hand: the loopback's tokens are words with their leading space, -0.1 per character (at most -1)."""
    means = []
    for c in prompt.continuations:
        lps = [default_token_logprob("", t) for t in split_tokens(c)]
        means.append(sum(lps) / len(lps))
    weights = [math.exp(m) for m in means]
    return tuple(w / sum(weights) for w in weights)


def test_options_scored_as_continuations_from_echoed_logprobs(loopback):
    server = loopback()
    dist = client(server).score(PROMPTS[0])
    assert dist.ok and dist.method is ScoringMethod.COMPLETION
    # " Very important" = " Very" (-0.4) + " important" (-0.9): mean -0.65; " Not at all important": -0.425
    assert dist.extra["option_scores"] == pytest.approx([-0.65, -0.75, -0.533333, -0.425], abs=1e-6)
    assert dist.probs == pytest.approx(expected(PROMPTS[0]))
    assert dist.extra["option_tokens"] == [2, 2, 3, 4]
    body = server.requests[0]
    assert body["echo"] is True and body["logprobs"] == 1 and body["max_tokens"] == 1 and body["temperature"] == 0
    assert body["prompt"] == [PROMPTS[0].text + c for c in PROMPTS[0].continuations]
    assert dist.cost_usd == 0.0 and dist.prompt_tokens > 0


def test_offsets_shifted_by_a_bos_token_and_vllm_prompt_logprobs_read_the_same(loopback):
    want = expected(PROMPTS[1])
    for mode, style in (("bos_text", "echo"), ("prompt_logprobs", "prompt_logprobs"), ("grammar", "grammar")):
        server = loopback(completion_mode=mode)
        dist = client(server, completion_logprobs=style).score(PROMPTS[1])
        assert dist.ok and dist.probs == pytest.approx(want), mode
        assert dist.extra["completion_logprobs"] == style
    assert server.requests[-1]["grammar"].startswith("root ::= <[")  # token ids, never the text


def test_leading_space_boundary_inside_a_token_belongs_to_the_continuation():
    # SentencePiece puts the space before "Very" into the token " Very": the boundary falls inside it
    prompt, cont = "Question: God?\nAnswer:", " Very important"
    choice = {
        "text": prompt + cont + " X",
        "logprobs": {
            "tokens": ["Question", ":", " God", "?", "\n", "Answer", ":", " Very", " important", " X"],
            "token_logprobs": [None, -1.0, -2.0, -0.5, -0.1, -0.3, -0.2, -1.5, -0.5, -3.0],
            "text_offset": [0, 8, 9, 13, 14, 15, 21, 22, 27, 37],
        },
    }
    assert completions.echoed_logprobs(choice, prompt, cont) == [-1.5, -0.5]
    # a token that holds the prompt's last character and the continuation's first is the continuation's
    tokens = [*choice["logprobs"]["tokens"][:6], ": Very", " important", " X"]
    values = [None, -1.0, -2.0, -0.5, -0.1, -0.3, -4.0, -0.5, -3.0]
    merged = dict(choice, logprobs={"tokens": tokens, "token_logprobs": values, "text_offset": None})
    assert completions.echoed_logprobs(merged, prompt, cont) == [-4.0, -0.5]


def test_many_probes_share_one_request_and_the_cache_is_per_prompt(loopback, result_cache):
    server = loopback()
    first = client(server, result_cache, batch_size=3).score_many(PROMPTS)
    assert all(d.ok for d in first) and server.request_count == 3  # 7 probes in batches of 3
    assert sorted(len(r["prompt"]) for r in server.requests) == [4, 12, 12]
    assert all(d.probs == pytest.approx(expected(p)) for d, p in zip(first, PROMPTS, strict=True))
    again = client(server, result_cache, batch_size=5).score_many([*PROMPTS[2:], make_prompt("A new one?")])
    assert server.request_count == 4 and len(server.requests[-1]["prompt"]) == 4  # only the new probe is asked
    assert all(d.cached for d in again[:-1]) and not again[-1].cached


def test_a_reply_with_fewer_choices_fails_those_probes_never_shifts_them(loopback):
    server = loopback(faults=["short"])
    results = client(server, batch_size=2, max_concurrency=1).score_many(PROMPTS[:4])
    assert [d.ok for d in results] == [True, False, True, True]
    assert "no choice for option 'Not at all important'" in results[1].error
    assert results[0].probs == pytest.approx(expected(PROMPTS[0]))


def test_a_failed_request_is_split_so_one_too_long_prompt_fails_alone(loopback):
    server = loopback(max_context=20)
    long = make_prompt("How important is a very long question with many many words in it to you and yours?")
    results = client(server, batch_size=3).score_many([PROMPTS[0], long, PROMPTS[1]])
    assert [d.ok for d in results] == [True, False, True]
    assert "maximum context length is 20 tokens" in results[1].error and "\n" not in results[1].error
    # the first request held all three; then each probe alone (no probe asked twice once it had an answer); the
    # refused probe's first option alone (does the server take one prompt per request only? no: refused too)
    assert [len(r["prompt"]) if isinstance(r["prompt"], list) else 1 for r in server.requests] == [12, 4, 4, 1, 4]


def test_retries_per_request_then_success(loopback):
    server = loopback(faults=[503, 429])
    c = client(server, batch_size=4, max_retries=3, max_concurrency=1)
    results = c.score_many(PROMPTS[:4])
    assert all(d.ok for d in results) and server.request_count == 3 and c.stats.retries == 2


def test_a_server_that_takes_one_prompt_per_request_is_found_out(loopback):
    server = loopback(completion_mode="one_prompt")
    c = client(server, batch_size=3, max_retries=0)
    results = c.score_many(PROMPTS[:3])
    assert all(d.ok for d in results) and c.completions.one_prompt_per_request
    assert all(d.probs == pytest.approx(expected(p)) for d, p in zip(results, PROMPTS[:3], strict=True))
    asked = server.request_count
    c.score_many(PROMPTS[3:5])
    alone = [isinstance(r["prompt"], str) or len(r["prompt"]) == 1 for r in server.requests[asked:]]
    assert server.request_count - asked == 8 and all(alone)  # 2 probes x 4 options, one per request


def test_a_server_without_echoed_logprobs_is_one_line_naming_what_it_lacks(loopback):
    server = loopback(completion_mode="no_echo")
    c = client(server, batch_size=2)
    results = c.score_many(PROMPTS[:6])
    error = results[0].error
    assert all(not d.ok and d.error == error for d in results) and "\n" not in error
    assert error.startswith("openai/base-model: the server gives no log-probabilities of the prompt's tokens")
    assert "sample" in error and "verbalized" in error  # the methods that work without them
    calls = server.request_count
    assert not c.score(PROMPTS[6]).ok and server.request_count == calls  # known now: no more calls


def test_completion_method_is_refused_for_the_embedded_model_and_bad_settings():
    with pytest.raises(ModelError, match="in-process"):
        ModelClient(method="completion", cache=False)
    with pytest.raises(SelfAlignError, match="batch_size = 0"):
        ModelClient("openai/x", api_base="http://127.0.0.1:9/v1", method="completion", batch_size=0, cache=False)
    with pytest.raises(SelfAlignError, match="completion_logprobs"):
        ModelClient("openai/x", api_base="http://127.0.0.1:9/v1", completion_logprobs="psychic", cache=False)


def test_method_from_the_alias_and_recorded_per_result(loopback, tmp_path: Path):
    server = loopback()
    config = tmp_path / "models.toml"
    config.write_text(
        f'[models.base]\nmodel = "hosted_vllm/gemma"\napi_base = "{server.api_base}"\nmethod = "completion"\n'
        "batch_size = 2\ntimeout_s = 7.5\nmax_retries = 1\n"
    )
    c = ModelClient("base", config=config, cache=False)
    assert c.method is ScoringMethod.COMPLETION and c.batch_size == 2 and c.timeout_s == 7.5 and c.max_retries == 1
    results = c.score_many(PROMPTS[:3])
    assert [d.method for d in results] == [ScoringMethod.COMPLETION] * 3 and server.request_count == 2
    assert server.requests[0]["model"] == "gemma"  # hosted_vllm/ strings reach /v1/completions too
    assert ModelClient("base", config=config, cache=False, batch_size=5).batch_size == 5  # arguments win


def test_dspy_route_shows_the_transcript_and_scores_by_completion(loopback, tmp_path: Path):
    from selfalign.adapter import SurveyAdapter
    from selfalign.models.dspy_bridge import dspy_lm

    server = loopback()
    lm = dspy_lm("openai/base-model", api_base=server.api_base, method="completion", cache_dir=tmp_path / "c")
    dist = SurveyAdapter().score(lm, PROMPTS[0])
    assert dist.ok and dist.method is ScoringMethod.COMPLETION and dist.probs == pytest.approx(expected(PROMPTS[0]))
    assert lm.history[-1]["messages"] == [{"role": "user", "content": PROMPTS[0].text}]


def test_offsets_that_do_not_show_the_tokens_fail_the_probe_never_guess():
    prompt, cont = "Q: God?\nA:", " Yes"
    # the tokens do not spell the text (a server that normalised one), and the offsets count a "<bos>" first
    choice = {
        "text": prompt + cont + " X",
        "logprobs": {
            "tokens": ["<bos>", "Q", ":", " Gods", "?", "\n", "A", ":", " Yes", " X"],
            "token_logprobs": [None, None, -1.0, -2.0, -0.5, -0.1, -0.3, -0.2, -1.5, -3.0],
            "text_offset": [0, 5, 6, 7, 12, 13, 14, 15, 16, 20],
        },
    }
    with pytest.raises(completions.ReplyProblem, match="do not spell"):
        completions.echoed_logprobs(choice, prompt, cont)
