# ruff: noqa: F811
"""The hosted path through LiteLLM against a fault-injecting OpenAI-compatible server on 127.0.0.1.

The server (selfalign.models.loopback) speaks the chat-completions protocol with logprobs; it counts the
requests that reach it, so caching and retries are checked by what actually arrived.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from models_fixtures import files_bytes, loopback, make_prompt, result_cache  # noqa: F401

from selfalign.errors import ModelError, SelfAlignError
from selfalign.models import ModelClient, ScoringMethod, dspy_lm
from selfalign.models.loopback import Reply

SECRET = "sk-test-SECRET123"
P = make_prompt("How important is religion in your life?")
PROMPTS = [make_prompt(f"How important is topic {i} in your life?") for i in range(6)]


def hand_checked(body, index):
    # A 0.5 + " A" 0.1 = 0.6, B 0.2, others 0.2 -> A 0.75, B 0.25, off-option 0.2
    return Reply(
        "A",
        (
            ("A", math.log(0.5)),
            ("B", math.log(0.2)),
            ("The", math.log(0.15)),
            (" A", math.log(0.1)),
            ("b", math.log(0.05)),
        ),
    )


def client(server, cache=False, **kw) -> ModelClient:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return ModelClient("openai/test-model", api_base=server.api_base, cache=cache, **kw)


def test_top_logprobs_parsed_through_litellm(loopback):
    server = loopback(policy=hand_checked)
    dist = client(server).score(P)
    assert dist.ok and dist.method is ScoringMethod.LOGPROB
    assert dist.probs == pytest.approx((0.75, 0.25, 0.0, 0.0))
    assert dist.off_option_mass == pytest.approx(0.2)
    assert dist.raw_answer == "A" and dist.prompt_tokens > 0
    body = server.requests[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1
    assert body["temperature"] == 0 and body["messages"] == list(P.messages)
    assert not any("cost" in k or "key" in k for k in body)  # LiteLLM-side parameters stay on this side
    assert dist.cost_usd == 0.0  # a server on 127.0.0.1 bills nothing


def test_routing_by_model_string_and_api_base(loopback, tmp_path: Path):
    a, b = loopback(), loopback()
    ModelClient("openai/model-a", api_base=a.api_base, cache=False).score(P)
    ModelClient("hosted_vllm/model-b", api_base=b.api_base, cache=False).score(P)
    assert [r["model"] for r in a.requests] == ["model-a"]
    assert [r["model"] for r in b.requests] == ["model-b"]
    config = tmp_path / "models.toml"
    config.write_text(f'[models.second]\nmodel = "openai/model-c"\napi_base = "{b.api_base}"\n')
    ModelClient("second", config=config, cache=False).score(P)
    assert b.requests[-1]["model"] == "model-c" and a.request_count == 1


def test_router_balances_deployments(loopback, tmp_path: Path):
    a, b = loopback(), loopback()
    config = tmp_path / "models.toml"
    config.write_text(
        "[models.farm]\nsupports_logprobs = true\ndeployments = [\n"
        f'  {{ model = "openai/farm-model", api_base = "{a.api_base}" }},\n'
        f'  {{ model = "openai/farm-model", api_base = "{b.api_base}" }},\n]\n'
    )
    prompts = [make_prompt(f"Question number {i}?") for i in range(24)]
    results = ModelClient("farm", config=config, cache=False).score_many(prompts)
    assert all(r.ok for r in results)
    assert a.request_count + b.request_count == 24 and a.request_count > 0 and b.request_count > 0


def test_429_then_500_then_success_is_retried(loopback):
    server = loopback(faults=[429, 500], retry_after_s=0.2)
    c = client(server, max_retries=3)
    start = time.perf_counter()
    dist = c.score(P)
    assert dist.ok and dist.error is None
    assert server.request_count == 3 and c.stats.retries == 2 and c.stats.calls == 3
    assert time.perf_counter() - start >= 0.2  # Retry-After of the 429 honoured


def test_retries_exhausted_is_recorded_as_failed(loopback, result_cache):
    server = loopback(faults=[503, 503])
    c = client(server, result_cache, max_retries=1)
    dist = c.score(P)
    assert not dist.ok and dist.probs == () and "503" in dist.error and "\n" not in dist.error
    assert c.stats.failures == 1 and server.request_count == 2
    # failures are not cached: the next run asks again (and now succeeds)
    again = client(server, result_cache).score(P)
    assert again.ok and server.request_count == 3


def test_hanging_call_times_out_and_the_run_goes_on(loopback):
    server = loopback(faults=["hang"], hang_s=10)
    c = client(server, timeout_s=0.5, max_retries=0, max_concurrency=1)
    start = time.perf_counter()
    results = c.score_many(PROMPTS[:3])
    assert time.perf_counter() - start < 5
    assert results[0].error is not None and "timeout" in results[0].error.lower() and not results[0].ok
    assert all(r.ok for r in results[1:])


def test_bad_request_is_not_retried(loopback):
    server = loopback(faults=[400, 400, 400])
    dist = client(server, max_retries=3).score(P)
    assert dist.error is not None and server.request_count == 1


def test_off_format_answers_are_invalid_never_coerced(loopback, result_cache):
    server = loopback(policy=lambda body, i: Reply("Maybe", (("Maybe", -0.1), ("Perhaps", -2.5))))
    logprob = client(server, result_cache).score(P)
    assert logprob.invalid and logprob.probs == () and logprob.raw_answer == "Maybe" and logprob.error is None
    greedy = client(server, result_cache, method="greedy").score(P)
    assert greedy.invalid and greedy.method is ScoringMethod.GREEDY and greedy.raw_answer == "Maybe"
    sample = client(server, result_cache, method="sample", n_samples=4).score(P)
    assert sample.invalid and sample.method is ScoringMethod.SAMPLE and sample.off_option_mass == 1.0
    # invalid answers are cached with their raw answer: asking again reaches no server
    count = server.request_count
    again = client(server, result_cache, method="greedy").score(P)
    assert again.cached and again.invalid and again.raw_answer == "Maybe" and server.request_count == count


def test_sampling_counts_answers(loopback):
    answers = ["A", "B) Rather important", "no idea", "A"]
    server = loopback(policy=lambda body, i: [Reply(a) for a in answers])
    dist = client(server, method="sample", n_samples=4, temperature=0.7).score(P)
    assert dist.method is ScoringMethod.SAMPLE and dist.probs == pytest.approx((2 / 3, 1 / 3, 0, 0))
    assert dist.off_option_mass == pytest.approx(0.25)
    assert server.requests[0]["n"] == 4 and server.requests[0]["temperature"] == 0.7


def test_sampling_fills_up_when_the_backend_ignores_n(loopback):
    server = loopback(policy=lambda body, i: [Reply("C")])  # one choice whatever n says
    dist = client(server, method="sample", n_samples=3).score(P)
    assert dist.probs == pytest.approx((0, 0, 1, 0)) and server.request_count == 3


def test_backend_without_logprobs_falls_back_to_sampling(loopback):
    server = loopback(logprobs_supported=False, policy=lambda body, i: Reply("B"))
    c = client(server, n_samples=3)
    assert c.method_for(P) is ScoringMethod.LOGPROB
    dist = c.score(P)
    assert dist.method is ScoringMethod.SAMPLE and dist.probs == pytest.approx((0, 1, 0, 0))
    assert dist.extra["fallback_from"] == "logprob" and c.supports_logprobs is False


def test_second_run_is_served_from_the_cache(loopback, result_cache):
    server = loopback(policy=hand_checked)
    first = client(server, result_cache).score_many(PROMPTS)
    assert server.request_count == len(PROMPTS)
    seen: list[int] = []
    c = client(server, result_cache)
    second = c.score_many(PROMPTS, on_result=lambda i, d: seen.append(i))
    assert server.request_count == len(PROMPTS)  # zero requests reached the server
    assert c.stats.calls == 0 and c.stats.cache_hits == len(PROMPTS) and sorted(seen) == list(range(6))
    assert [d.probs for d in second] == [d.probs for d in first] and all(d.cached for d in second)
    # a different decoding parameter is a different key
    client(server, result_cache, top_logprobs=5).score(PROMPTS[0])
    assert server.request_count == len(PROMPTS) + 1
    info = result_cache.info()
    assert info.entries == len(PROMPTS) + 1 and info.last_run_hits >= len(PROMPTS)


def test_results_come_back_in_input_order_with_concurrency(loopback):
    server = loopback(
        delay_s=0.05,
        policy=lambda body, i: Reply("ABCD"[int(body["messages"][0]["content"].split("topic ")[1][0]) % 4]),
    )
    results = client(server, max_concurrency=6, method="greedy").score_many(PROMPTS)
    assert [r.argmax for r in results] == [i % 4 for i in range(6)]


def test_no_key_in_cache_files_or_errors(loopback, result_cache, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    good = loopback(policy=hand_checked)
    c = client(good, result_cache, method="greedy")
    assert c.score(P).ok
    assert good.headers_seen[0]["authorization"] == f"Bearer {SECRET}"  # the key was really sent
    client(good, result_cache).score_many(PROMPTS)
    c.complete([{"role": "user", "content": "Say hello"}])
    # a server that echoes the key in its error message (401 is not retried)
    bad = loopback(faults=[401])
    failed = client(bad, result_cache).score(P)
    assert failed.error is not None and ("401" in failed.error or "Authentication" in failed.error)
    assert "SECRET123" not in failed.error
    with pytest.raises(ModelError) as info:
        client(loopback(faults=[401]), result_cache).complete([{"role": "user", "content": "Hi"}])
    assert "SECRET123" not in str(info.value)
    # a key given through a config alias's api_key_env
    monkeypatch.setenv("SELFALIGN_TEST_KEY", "sk-alias-SECRET456")
    config = tmp_path / "models.toml"
    config.write_text(
        f'[models.keyed]\nmodel = "openai/k"\napi_base = "{good.api_base}"\napi_key_env = "SELFALIGN_TEST_KEY"\n'
    )
    assert ModelClient("keyed", config=config, cache=result_cache).score(PROMPTS[1]).ok
    assert good.headers_seen[-1]["authorization"] == "Bearer sk-alias-SECRET456"
    result_cache.save_run_stats()
    written = files_bytes(result_cache.path)
    assert len(written) > 0 and b"SECRET123" not in written and b"SECRET456" not in written


def test_keys_are_refused_as_arguments(loopback):
    with pytest.raises(ModelError):
        ModelClient("openai/x", api_key=SECRET, cache=False)


def test_complete_is_cached(loopback, result_cache):
    server = loopback(policy=lambda body, i: Reply("Bonjour"))
    c = client(server, result_cache)
    messages = [{"role": "user", "content": "Translate 'hello' into French."}]
    assert c.complete(messages, max_tokens=5) == "Bonjour"
    assert c.complete(messages, max_tokens=5) == "Bonjour"
    assert server.request_count == 1 and server.requests[0]["max_tokens"] == 5


def test_dspy_lm_routes_through_litellm_and_the_one_cache(loopback, tmp_path: Path):
    server = loopback(policy=lambda body, i: Reply("hello there"))
    lm = dspy_lm("openai/dspy-model", api_base=server.api_base, cache_dir=tmp_path / "dspy-cache")
    assert lm.model.startswith("selfalign/cached/openai/dspy-model")
    assert lm("Say hi") == ["hello there"]
    assert lm("Say hi") == ["hello there"]
    assert server.request_count == 1 and server.requests[0]["model"] == "dspy-model"


def test_worker_processes_share_a_large_batch(loopback, result_cache):
    server = loopback(policy=hand_checked)
    prompts = [make_prompt(f"Worker question {i}?") for i in range(40)]
    seen: list[int] = []
    c = client(server, result_cache, workers=2, max_concurrency=8)
    results = c.score_many(prompts, on_result=lambda i, d: seen.append(i))
    assert sorted(seen) == list(range(40)) and all(r.ok for r in results)
    assert all(r.probs == pytest.approx((0.75, 0.25, 0.0, 0.0)) for r in results)
    assert server.request_count == 40 and c.stats.calls == 40 and c.stats.prompt_tokens > 0
    again = client(server, result_cache, workers=2).score_many(prompts)
    assert server.request_count == 40 and all(r.cached for r in again)


def _parts(secret: str, n: int = 8) -> list[bytes]:
    return [secret[i : i + n].encode() for i in range(len(secret) - n + 1)]


def test_a_key_echoed_in_normal_answers_reaches_no_cache_entry_and_no_result(
    loopback, result_cache, monkeypatch, tmp_path: Path
):
    key = "sk-test-planted-9f8e7d6c5b4a39281706"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    server = loopback(echo_auth=True, policy=lambda body, i: Reply("Maybe"))  # every answer ends "(Bearer <key>)"
    results = [
        client(server, result_cache, method="greedy").score(P),
        client(server, result_cache, method="sample", n_samples=2).score(P),
        client(server, result_cache, method="verbalized").score(P),
        client(server, result_cache).score(P),  # logprob: the raw answer
    ]
    text = client(server, result_cache).complete([{"role": "user", "content": "Say hello"}])
    assert server.headers_seen[0]["authorization"] == f"Bearer {key}"  # the key was really sent and echoed
    assert all(r.raw_answer and "Maybe" in r.raw_answer and "***" in r.raw_answer for r in results)
    assert "Maybe" in text and "***" in text
    # a key from a config alias's api_key_env, echoed the same way
    monkeypatch.setenv("SELFALIGN_LAB_CRED", "lab-0123456789abcdef")
    config = tmp_path / "models.toml"
    config.write_text(
        f'[models.lab]\nmodel = "openai/k"\napi_base = "{server.api_base}"\napi_key_env = "SELFALIGN_LAB_CRED"\n'
    )
    results.append(ModelClient("lab", config=config, cache=result_cache, method="greedy").score(P))
    assert server.headers_seen[-1]["authorization"] == "Bearer lab-0123456789abcdef"
    result_cache.save_run_stats()
    stored = files_bytes(result_cache.path) + repr([r for r in results]).encode() + text.encode()
    for secret in (key, "lab-0123456789abcdef"):
        assert not any(part in stored for part in _parts(secret)), secret  # not whole, not any 8 characters


def test_retry_invalid_asks_a_cached_off_format_answer_again(loopback, result_cache):
    answers = iter(["Maybe", "B"])
    server = loopback(policy=lambda body, i: Reply(next(answers)))
    first = client(server, result_cache, method="greedy").score(P)
    assert first.invalid and server.request_count == 1
    kept = client(server, result_cache, method="greedy").score(P)
    assert kept.cached and kept.invalid and server.request_count == 1  # by default the invalid answer is kept
    fixed = client(server, result_cache, method="greedy", retry_invalid=True).score(P)
    assert fixed.ok and not fixed.cached and fixed.argmax == 1 and server.request_count == 2
    assert client(server, result_cache, method="greedy").score(P).ok  # the new answer replaced the old one
    assert client(server, result_cache, method="greedy", retry_invalid=True).score(P).cached  # valid: not asked


def test_bad_client_numbers_are_refused_with_one_line(loopback):
    server = loopback()
    for kwargs, name in (
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"max_retries": -1}, "max_retries"),
        ({"n_samples": 0}, "n_samples"),
        ({"method": "psychic"}, "scoring method"),
    ):
        with pytest.raises(SelfAlignError) as info:
            client(server, **kwargs)
        assert name in str(info.value) and "\n" not in str(info.value)
