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


# --- the completion method: base-model scoring over text completions, as in-process ----------------------
SHORT = [
    make_prompt("Is God important in your life?", options=("Yes", "No")),
    make_prompt("How important is work in your life?"),
    make_prompt("Do you trust your neighbours?", options=("Completely", "Somewhat", "Not at all")),
]


def js_distance(p, q) -> float:
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    kl = [sum(a * math.log2(a / b) for a, b in zip(x, m, strict=True) if a > 0) for x in (p, q)]
    return math.sqrt(max(0.0, sum(kl) / 2))


def completion_client(api_base: str, style: str = "grammar", **kw) -> ModelClient:
    return ModelClient(
        "openai/gemma", api_base=api_base, cache=False, method="completion", completion_logprobs=style,
        timeout_s=300, max_retries=0, **kw,
    )  # fmt: skip


def test_completion_scores_like_the_embedded_model_in_process(llama_server: LlamaCppServer):
    local = ModelClient(cache=False).score_many(SHORT)
    served = completion_client(llama_server.api_base).score_many(SHORT)
    for a, b in zip(local, served, strict=True):
        assert b.ok and b.method is ScoringMethod.COMPLETION, b.error
        assert b.extra["option_tokens"] == [len(o.split()) for o in b.options]  # each word is one Gemma token here
        # llama.cpp's numbers depend on how the server splits its evaluation (see the README): close, not equal
        assert a.argmax == b.argmax and js_distance(a.probs, b.probs) < 0.05


def test_echo_works_on_llama_cpp_python_one_prompt_per_request(llama_server: LlamaCppServer):
    tiny = make_prompt("God?", options=("Yes", "No"))
    echo = completion_client(llama_server.api_base, style="echo")
    dist = echo.score(tiny)
    assert dist.ok and echo.completions.one_prompt_per_request  # the server refuses a list of prompts
    grammar = completion_client(llama_server.api_base).score(tiny)
    assert dist.argmax == grammar.argmax and js_distance(dist.probs, grammar.probs) < 0.05


def test_a_server_without_logits_is_one_line_naming_what_it_lacks():
    with LlamaCppServer(n_ctx=256, logits_all=False) as server:
        client = completion_client(server.api_base)
        results = client.score_many(SHORT[:2])
    error = results[0].error
    assert not results[0].ok and results[1].error == error and "\n" not in error
    assert error.startswith("openai/gemma: the server refuses what method 'completion' needs")
    assert "--logits_all true" in error and "sample" in error and client.stats.calls == 1


def test_a_compare_over_two_servers_behind_one_alias_gives_the_table_of_one(tmp_path, monkeypatch):
    """``selfalign compare`` (the runner, its cache and its table) over an alias with two deployments prints and
    stores what the same compare over one server does."""
    import pandas as pd
    from click.testing import CliRunner

    from selfalign.cli import cli

    # n_batch=1: each token evaluated alone, so a server's numbers do not depend on what it evaluated before
    with LlamaCppServer(n_ctx=256, n_batch=1, n_threads=1) as a, LlamaCppServer(n_ctx=256, n_batch=1, n_threads=1) as b:
        common = 'method = "completion"\ncompletion_logprobs = "grammar"\nbatch_size = 1\n'
        config = tmp_path / "models.toml"
        config.write_text(
            f'[models.one]\n{common}model = "openai/gemma"\napi_base = "{a.api_base}"\n\n'
            f"[models.pair]\n{common}max_concurrency = 2\ndeployments = [\n"
            f'  {{ model = "openai/gemma", api_base = "{a.api_base}" }},\n'
            f'  {{ model = "openai/gemma", api_base = "{b.api_base}" }},\n]\n'
        )
        monkeypatch.setenv("SELFALIGN_CONFIG", str(config))
        printed, served = {}, {}
        for alias in ("one", "pair"):
            before = [s.log_tail(10_000_000).count("POST /v1/completions") for s in (a, b)]
            result = CliRunner().invoke(
                cli,
                ["compare", "--model", alias, "--countries", "NGA", "--limit", "3", "--programs", "zero-shot,persona",
                 "--timeout", "300", "--out", str(tmp_path / alias), "--cache-dir", str(tmp_path / f"cache-{alias}")],
                catch_exceptions=False,
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            lines = result.output.splitlines()
            first = next(i for i, line in enumerate(lines) if line.strip() == "NGA")
            printed[alias] = [line for line in lines[first:] if str(tmp_path) not in line and "probes in" not in line]
            after = [s.log_tail(10_000_000).count("POST /v1/completions") for s in (a, b)]
            served[alias] = [n - m for n, m in zip(after, before, strict=True)]
    assert served["one"][0] == 12 and served["one"][1] == 0  # 6 distinct prompts x 2 options, all on server a
    assert sum(served["pair"]) == 12 and min(served["pair"]) > 0  # both servers answered
    assert printed["pair"] == printed["one"] and any("persona" in line for line in printed["one"])
    columns = ["country", "question_id", "program", "method", "ok", "probs", "model_choice", "agreement"]
    columns += ["js_similarity", "wasserstein_similarity"]
    tables = {alias: pd.read_parquet(tmp_path / alias / "runs.parquet")[columns] for alias in ("one", "pair")}
    assert len(tables["one"]) == 6 and tables["one"]["ok"].all() and set(tables["one"]["method"]) == {"completion"}
    pd.testing.assert_frame_equal(tables["pair"], tables["one"])  # identical, whichever server answered
