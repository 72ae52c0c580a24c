"""The hosted path against a real server no one here wrote: llama-cpp-python's OpenAI-compatible server
serving the embedded model on 127.0.0.1, reached through LiteLLM as an ``api_base`` with real top_logprobs."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from models_fixtures import make_prompt

from selfalign.models import ModelClient, ScoringMethod
from selfalign.models.servers import LlamaCppServer, server_available

pytestmark = [pytest.mark.model, pytest.mark.slow]

DEMOS = (
    ("How important is family in your life?", "Very important"),
    ("How important is politics in your life?", "Not very important"),
)


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaCppServer]:
    if not server_available():
        pytest.skip("llama_cpp.server cannot be imported (install llama-cpp-python[server])")
    with LlamaCppServer(n_ctx=2048) as server:
        yield server


def test_real_top_logprobs_give_a_valid_distribution(llama_server: LlamaCppServer):
    client = ModelClient("openai/gemma", api_base=llama_server.api_base, cache=False, timeout_s=120)
    assert client.supports_logprobs and not client.is_text_model
    dist = client.score(make_prompt("How important is religion in your life?", demos=DEMOS))
    assert dist.error is None, dist.error
    assert dist.method is ScoringMethod.LOGPROB and dist.ok
    assert math.isclose(sum(dist.probs), 1.0, abs_tol=1e-9) and len(dist.probs) == 4
    # a base model behind a chat template puts most of its first-token mass elsewhere (newlines): kept, not hidden
    assert 0.0 < dist.off_option_mass < 1.0
    assert dist.prompt_tokens > 0 and dist.completion_tokens == 1


def test_many_probes_concurrently_against_the_server(llama_server: LlamaCppServer):
    client = ModelClient("openai/gemma", api_base=llama_server.api_base, cache=False, timeout_s=120, max_concurrency=4)
    topics = ("family", "friends", "work", "politics")
    results = client.score_many([make_prompt(f"How important is {t} in your life?", demos=DEMOS) for t in topics])
    assert all(r.error is None for r in results)
    assert all(r.ok or (r.invalid and r.raw_answer is not None) for r in results)
    assert client.stats.calls == 4 and client.stats.failures == 0
