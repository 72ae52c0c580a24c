"""The embedded model end to end with real weights (Gemma 3 270M in-process through llama.cpp), and the
prefill schedule that reuses shared prompt prefixes while keeping every number of a fresh evaluation."""

# ruff: noqa: F811
from __future__ import annotations

import csv
import itertools
import json
import math
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from models_fixtures import make_prompt, result_cache  # noqa: F401

from selfalign import DEFAULT_MODEL
from selfalign.models import ModelClient, ScoringMethod, dspy_lm
from selfalign.models import embedded as emb
from selfalign.models.embedded import (
    EmbeddedModel,
    _log_softmax_at,
    common_prefix,
    get_embedded_model,
    plan_prefill,
)
from selfalign.models.litellm_env import import_litellm
from selfalign.models.types import RenderedPrompt
from selfalign.models.wire import SCORES_KEY
from selfalign.plan import plan_run, render_rows
from selfalign.runlog import LOG_FILE
from selfalign.runner import run_spec
from selfalign.specs import parse_spec, spec_path

model = pytest.mark.model

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


@model
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


@model
def test_demonstrations_move_the_distribution():
    client = ModelClient(cache=False)
    zero = client.score(make_prompt(RELIGION))
    secular = client.score(make_prompt(RELIGION, demos=NO_GOD))
    religious = client.score(make_prompt(RELIGION, demos=YES_GOD))
    not_at_all = 3
    assert secular.probs[not_at_all] > zero.probs[not_at_all] + 0.15
    assert secular.argmax == not_at_all and zero.argmax != not_at_all  # the answer flips
    assert religious.probs[0] > secular.probs[0] + 0.15  # and the other way round


@model
def test_kv_prefix_reuse_gives_the_numbers_of_a_fresh_evaluation():
    engine = get_embedded_model()
    first = make_prompt(RELIGION, demos=FILLER + NO_GOD)
    second = make_prompt("How important is tradition in your life?", demos=FILLER + NO_GOD)
    engine.score(first.text, first.continuations)
    reused = engine.score(second.text, second.continuations)
    assert reused.reused_tokens >= 128  # the shared demonstrations came from the KV cache
    engine._reset_kv()
    fresh = engine.score(second.text, second.continuations)
    assert fresh.reused_tokens == 0
    assert reused.token_logprobs == fresh.token_logprobs  # bit for bit
    assert fresh.token_logprobs == fresh_scores(engine, second.text, second.continuations)
    # generation in between leaves the scores as they were
    engine.generate(second.text, max_tokens=4)
    after = engine.score(second.text, second.continuations)
    assert after.reused_tokens > 0 and after.token_logprobs == fresh.token_logprobs


@model
def test_multi_token_options_are_scored_token_by_token():
    engine = get_embedded_model()
    prompt = make_prompt(RELIGION)
    scores = engine.score(prompt.text, prompt.continuations)
    # " Not at all important" is several tokens, each a log-probability <= 0
    assert scores.option_tokens[3] >= 3 and len(scores.token_logprobs[3]) == scores.option_tokens[3]
    assert all(lp <= 0 for lps in scores.token_logprobs for lp in lps)


@model
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


@model
def test_greedy_and_sampled_answers_from_the_base_model():
    prompt = make_prompt(RELIGION, demos=NO_GOD)
    greedy = ModelClient(cache=False, method="greedy").score(prompt)
    assert greedy.method is ScoringMethod.GREEDY and greedy.ok and greedy.argmax == 3
    sample = ModelClient(cache=False, method="sample", n_samples=5, temperature=0.8).score(prompt)
    assert sample.method is ScoringMethod.SAMPLE and sample.extra["n"] == 5
    assert sample.ok or sample.invalid  # counted, never coerced
    if sample.ok:
        assert math.isclose(sum(sample.probs), 1.0)


@model
def test_too_long_prompt_is_an_error_result_not_an_exception():
    dist = ModelClient(cache=False).score(make_prompt("word " * 9000))
    assert not dist.ok and dist.error is not None and "context" in dist.error


@model
def test_probes_share_one_litellm_call_and_a_bad_one_fails_alone():
    """The client sends up to batch_size probes in one LiteLLM call; each is scored as if alone."""
    good = [make_prompt(RELIGION), make_prompt(RELIGION, demos=NO_GOD), make_prompt(RELIGION, demos=YES_GOD)]
    client = ModelClient(cache=False, batch_size=2)
    dists = client.score_many([good[0], make_prompt("word " * 9000), good[1], good[2]])
    assert client.stats.calls == 2 and client.stats.requests == 4 and client.stats.failures == 1
    assert not dists[1].ok and "context" in (dists[1].error or "")
    engine = get_embedded_model()
    for prompt, dist in zip(good, [dists[0], *dists[2:]], strict=True):
        assert dist.ok and dist.prompt_tokens > 0 and dist.latency_s > 0
        engine._reset_kv()  # a fresh evaluation, prompt by prompt
        alone = engine.score(prompt.text, prompt.continuations)
        assert dist.extra["option_scores"] == [round(m, 6) for m in alone.mean_logprobs]
    litellm = import_litellm()
    reply = litellm.completion(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": good[0].text}],
        selfalign_score={"probes": [{"text": "word " * 9000, "continuations": [" a"]},
                                    {"text": good[0].text, "continuations": list(good[0].continuations)}]},
    )  # fmt: skip
    first, second = reply._hidden_params[SCORES_KEY]["probes"]
    assert set(first) == {"error"} and "context" in first["error"]
    assert len(second["token_logprobs"]) == 4 and second["evaluated_tokens"] > 0


@model
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


# --- the prefill schedule: reuse shared prefixes, keep the numbers of a fresh evaluation ----------------------


def fresh_scores(engine: EmbeddedModel, text: str, continuations: Sequence[str]) -> tuple[tuple[float, ...], ...]:
    """What ``EmbeddedModel.score`` computed before prefixes were shared (the canonical evaluation, replicated
    step by step from primitives): an empty KV cache, the shared prompt in 128-token blocks aligned to
    absolute positions, then every option in one batch. Leaves the KV cache empty."""
    ll = engine._ll
    engine._reset_kv()
    prefix, options = engine.split_prompt(text, continuations)
    shared = len(prefix)
    for start in range(0, shared, 128):
        chunk = prefix[start : start + 128]
        last = start + len(chunk) == shared
        engine._decode([(t, start + i, 0, last and i == len(chunk) - 1) for i, t in enumerate(chunk)])
    first = np.array(engine._row(len(chunk) - 1), dtype=np.float32)
    peak = float(first.max())
    lse = peak + math.log(float(np.exp(first - peak).sum(dtype=np.float64)))
    scores: list[tuple[float, ...]] = [()] * len(options)
    order = list(range(len(options)))
    while order:
        group, order = engine._group(order, options)
        items: list[tuple[int, int, int, bool]] = []
        starts = {}
        for slot, j in enumerate(group, start=1):
            ll.llama_memory_seq_cp(engine._mem, 0, slot, 0, shared)
            starts[j] = len(items)
            items += [(t, shared + i, slot, i < len(options[j]) - 1) for i, t in enumerate(options[j])]
        engine._decode(items)
        for j in group:
            o = options[j]
            tail = [_log_softmax_at(engine._row(starts[j] + i), o[i + 1]) for i in range(len(o) - 1)]
            scores[j] = (float(first[o[0]]) - lse, *tail)
        for slot in range(1, len(group) + 1):
            ll.llama_memory_seq_rm(engine._mem, slot, -1, -1)
    engine._reset_kv()
    return tuple(scores)


def survey_prompts(protocol: str, countries: list[str], limit: int) -> list[RenderedPrompt]:
    """The distinct prompts of a small real spec (bundled WVS-7 survey, the project's programs), sorted by
    transcript as the runner sends them, so that consecutive prompts share prefixes."""
    spec = parse_spec(
        {
            "name": "prefix-sharing",
            "survey": "wvs7",
            "protocol": protocol,
            "split": "test",
            "seeds": [0],
            "models": [DEFAULT_MODEL],
            "limit": limit,
            "grid": [
                {"programs": ["zero-shot", "persona", "self-align-chrf", "self-align-topic"], "k": [5],
                 "countries": countries},
                {"programs": ["self-align-chrf"], "k": [1, 3], "countries": countries},
            ],
        }
    )  # fmt: skip
    plan = plan_run(spec)
    render_rows(plan, plan.rows)
    distinct = {(r.prompt.text, r.prompt.continuations): r.prompt for r in plan.rows if r.prompt is not None}
    return sorted(distinct.values(), key=lambda p: p.text)


def sharing_window(engine: EmbeddedModel, prompts: list[RenderedPrompt], n: int) -> list[RenderedPrompt]:
    """The ``n`` consecutive prompts whose schedule reuses the most tokens (a deterministic choice)."""
    tokens = [engine.split_prompt(p.text, p.continuations)[0] for p in prompts]
    reuse = [0] + [plan_prefill(a, b)[0] for a, b in itertools.pairwise(tokens)]
    best = max(range(len(prompts) - n + 1), key=lambda i: sum(reuse[i + 1 : i + n]))
    return prompts[best : best + n]


@model
@pytest.mark.parametrize(
    ("protocol", "countries", "short"),
    [("binary", ["NGA", "DEU", "JPN", "BRA"], False), ("binary", ["NGA", "DEU", "JPN", "BRA"], True),
     ("options", ["NGA", "DEU", "JPN"], False)],
)  # fmt: skip
def test_shared_prefixes_give_the_numbers_of_a_fresh_evaluation_bit_for_bit(protocol, countries, short):
    engine = get_embedded_model()
    prompts = survey_prompts(protocol, countries, 3)
    if short:  # zero-shot and persona prompts (15): one block of fewer than 64 tokens (row attention)
        window = [p for p in prompts if len(engine.tokenize(p.text)) < 64]
    else:
        window = sharing_window(engine, prompts, 8 if protocol == "binary" else 6)
    tokens = [engine.split_prompt(p.text, p.continuations)[0] for p in window]
    shared = [common_prefix(a, b) for a, b in itertools.pairwise(tokens)]
    assert any(n % 8 for n in shared)  # prompts sharing prefixes off every block size (8, 16, ..., 128)
    engine._reset_kv()
    scheduled = [engine.score(p.text, p.continuations) for p in window]  # each reusing the previous prompt
    reused = [s.reused_tokens for s in scheduled]
    assert sum(reused) > 0.3 * sum(s.prompt_tokens for s in scheduled)
    assert any(r % 8 for r in reused) or not short  # reused up to a multiple of 4 only
    if not short:
        assert any(r % 64 and r > 128 for r in reused)  # inside a block after a whole one
    if protocol == "options":
        assert any(max(s.option_tokens) > 1 for s in scheduled)  # the option batch is evaluated too
    for prompt, got in zip(window, scheduled, strict=True):
        assert got.token_logprobs == fresh_scores(engine, prompt.text, prompt.continuations), prompt.text[-200:]


@model
def test_order_scores_row_attention_prompts_first_and_the_runner_follows_it(tmp_path):
    engine = get_embedded_model()
    prompts = survey_prompts("binary", ["NGA", "DEU"], 2)  # sorted by transcript
    texts = [p.text for p in prompts]
    short = [len(engine.tokenize(t)) < emb.FA_TILE_ROWS for t in texts]
    assert any(short) and not all(short)
    order = engine.order(texts)
    assert sorted(order) == list(range(len(texts)))
    assert [short[i] for i in order] == sorted(short, reverse=True)  # the short ones first ...
    assert order == sorted(order, key=lambda i: (not short[i], i))  # ... each group by transcript
    tokens = [engine.split_prompt(p.text, p.continuations)[0] for p in prompts]

    def evaluated(seq: list[list[int]]) -> int:
        return sum(len(b) - plan_prefill(a, b)[0] for a, b in zip([[], *seq], seq, strict=False))

    assert evaluated([tokens[i] for i in order]) < evaluated(tokens)

    spec = parse_spec(
        {"name": "order", "survey": "wvs7", "protocol": "binary", "split": "test", "seeds": [0],
         "models": [DEFAULT_MODEL], "limit": 3,
         "grid": [{"programs": ["zero-shot", "self-align-chrf"], "k": [3], "countries": ["NGA"]}]}
    )  # fmt: skip
    plan = plan_run(spec)
    render_rows(plan, plan.rows)
    text_of = {r.base["prompt_sha256"]: r.prompt.text for r in plan.rows}
    run_spec(spec, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    flags = [len(engine.tokenize(text_of[row["prompt_sha256"]])) < emb.FA_TILE_ROWS for row in logged]
    assert any(flags) and not all(flags) and flags == sorted(flags, reverse=True)  # scored in the client's order


@model
def test_client_order_loads_no_model_when_every_prompt_is_cached(result_cache, monkeypatch):
    prompts = [make_prompt(RELIGION, demos=YES_GOD), make_prompt(RELIGION)]
    ModelClient(cache=result_cache).score_many(prompts)
    monkeypatch.setattr(emb, "get_embedded_model", lambda: pytest.fail("the model was loaded"))
    assert ModelClient(cache=result_cache).order(prompts) == sorted(range(2), key=lambda i: prompts[i].text)


def native_speakers() -> list[str]:
    """One country for each language bundled besides English (its first in surveys/wvs7/countries.csv)."""
    survey = Path(__file__).resolve().parent.parent / "surveys" / "wvs7"
    bundled = {p.name.split(".")[0] for p in (survey / "text").iterdir()} - {"en"}
    first: dict[str, str] = {}
    with (survey / "countries.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["language"] in bundled:
                first.setdefault(row["language"], row["code"])
    assert len(first) == len(bundled)
    return sorted(first.values())


@model
@pytest.mark.parametrize("protocol", ["binary", "options"])
def test_tokenizing_the_text_once_splits_every_prompt_as_tokenizing_each_continuation_whole(protocol, monkeypatch):
    """split_prompt tokenizes the text once and each continuation alone where the join cannot change a token
    (EmbeddedModel._joins_cleanly); on real prompts of every bundled language it gives the tokens of
    tokenizing ``text + continuation`` whole."""
    engine = get_embedded_model()
    data = tomllib.loads(spec_path("languages").read_text(encoding="utf-8"))
    data |= {"protocol": protocol, "limit": 2, "demo_languages": ["native"]}
    data["grid"][0]["countries"] = native_speakers()
    plan = plan_run(parse_spec(data, source="languages"))
    render_rows(plan, plan.rows)
    prompts = list({r.prompt.text: r.prompt for r in plan.rows if r.prompt is not None}.values())
    assert len(prompts) > 40
    fast = [engine.split_prompt(p.text, p.continuations) for p in prompts]
    clean = [all(engine._joins_cleanly(p.text, c) for c in p.continuations) for p in prompts]
    assert sum(clean) > 0.9 * len(prompts)  # the short path is the one taken
    with monkeypatch.context() as m:
        m.setattr(engine, "_joins_cleanly", lambda text, continuation: False)
        whole = [engine.split_prompt(p.text, p.continuations) for p in prompts]
        bridged = engine.split_prompt("<b>", [" </b>", " x"])
    assert fast == whole
    assert ("\u2581>", "\u2581</") not in engine._bridging and (">", "\u2581</") in engine._bridging
    assert not engine._joins_cleanly("<b>", " </b>") and engine._joins_cleanly("<b>", " x")
    assert engine.split_prompt("<b>", [" </b>", " x"]) == bridged


def last_logits(engine: EmbeddedModel, tokens: Sequence[int], batches: Sequence[tuple[int, int]]) -> np.ndarray:
    """The last position's logits after evaluating ``tokens`` in the given batches on an empty KV cache."""
    engine._reset_kv()
    for start, end in batches:
        engine._decode([(tokens[i], i, 0, i == len(tokens) - 1) for i in range(start, end)])
    row = np.array(engine._row(batches[-1][1] - 1 - batches[-1][0]))
    engine._reset_kv()
    return row


@model
def test_llama_cpp_numbers_depend_on_the_batch_as_the_schedule_assumes():
    """The three kernel choices plan_prefill keeps constant (see selfalign.models.embedded). If this fails after a
    llama.cpp upgrade, its constants (FA_TILE_ROWS, KQUANT_TILED_ROWS, REPACK_GROUP) must be measured again.

    A different kernel changes some bits of every token it computes, but a last logit row can come out equal by
    chance (the differences sometimes round away over the layers), so each change is tried on three prompts."""
    engine = get_embedded_model()
    prompts = survey_prompts("binary", ["NGA", "DEU", "JPN", "BRA"], 3)
    prompts = [p for p in prompts if len(engine.tokenize(p.text)) >= 200]
    sequences = [engine.tokenize(p.text)[:200] for p in prompts[:3]]  # blocks [0, 128), [128, 200): tiled
    assert len(sequences) == 3

    canonical = {200: [(0, 128), (128, 200)], 40: [(0, 40)]}
    reference = {(n, i): last_logits(engine, t[:n], canonical[n]) for n in canonical for i, t in enumerate(sequences)}

    def differs(length: int, other: list[tuple[int, int]]) -> list[bool]:
        return [
            not np.array_equal(reference[length, i], last_logits(engine, t[:length], other))
            for i, t in enumerate(sequences)
        ]

    # the same kernels for every token: the same numbers
    assert differs(200, [(0, 200)]) == [False] * 3  # merged blocks
    assert differs(200, [(0, 136), (136, 200)]) == [False] * 3
    assert differs(40, [(0, 20), (20, 40)]) == [False] * 3  # row attention, tiled Q6_K, all gemm
    # the last 52 tokens in a batch of fewer than 64: row attention instead of tiled
    assert any(differs(200, [(0, 148), (148, 200)]))
    # a batch of 4 (< 8): the per-column Q6_K kernel instead of the tiled one
    assert any(differs(40, [(0, 36), (36, 40)]))
    # a cut at 30: columns 28, 29 (and 38, 39) take the Q4_K gemv kernel instead of gemm
    assert any(differs(40, [(0, 30), (30, 40)]))


def test_plan_prefill_evaluates_a_fresh_prompt_in_merged_canonical_blocks():
    assert plan_prefill([], list(range(50))) == (0, [(0, 50)])
    assert plan_prefill([], list(range(220))) == (0, [(0, 220)])  # two tiled blocks, one batch
    assert plan_prefill([], list(range(150))) == (0, [(0, 128), (128, 150)])  # a last block of 22: row attention
    assert plan_prefill([], list(range(760))) == (0, [(0, 512), (512, 760)])  # at most 512 tokens a batch
    assert plan_prefill([], list(range(700))) == (0, [(0, 512), (512, 640), (640, 700)])
    assert plan_prefill([], [7]) == (0, [(0, 1)])


def test_plan_prefill_reuses_prefixes_that_keep_every_kernel():
    a = list(range(1000, 1220))
    # diverging at 203 in a tiled block: the rest is evaluated in one batch of at least 64 from a multiple of 4
    b = a[:203] + list(range(17))
    reuse, batches = plan_prefill(a, b)
    assert reuse == 156 and batches == [(156, 220)]
    # a long new suffix: reuse up to the last multiple of 4 before the first different token
    c = a[:130] + list(range(90))
    assert plan_prefill(a, c) == (128, [(128, 220)])
    d = a[:141] + list(range(90))
    assert plan_prefill(a, d) == (140, [(140, 231)])
    # short prompts (row attention, tiled Q6_K): at least 8 tokens, from a multiple of 4
    e, f = list(range(50)), [*list(range(45)), 99, 98, 97, 96, 95]
    assert plan_prefill(e, f) == (40, [(40, 50)])
    g = [*list(range(49)), 99]
    assert plan_prefill(e, g) == (40, [(40, 50)])
    # the cached prompt's tokens must have had the kernels they get in the new prompt: a 30-token prompt's last
    # block (row attention) is not the first half of a 100-token prompt's tiled block
    assert plan_prefill(list(range(30)), list(range(100)))[0] == 0
    # the same prompt again: only the last token (its logits are needed), in a batch as its block gives it
    assert plan_prefill(e, e) == (40, [(40, 50)])
    assert plan_prefill(a, a) == (156, [(156, 220)])
    assert plan_prefill(list(range(300)), list(range(300))) == (292, [(292, 300)])  # a last block of 44


def test_plan_prefill_takes_the_split_kv_kernel_of_a_one_token_block_into_account():
    # 257 tokens: the last block is one token over 512 padded cells (split-KV attention); 258: a block of 2
    one, two = list(range(257)), list(range(258))
    assert plan_prefill(two, one) == (256, [(256, 257)])
    assert plan_prefill(one, two)[0] == 256  # the cached token 256 had the split-KV kernel, not the row one
    # a one-token batch under 512 cells has the row kernel, like a last block of 3 (all gemv columns)
    assert plan_prefill(list(range(131)), [*list(range(130)), 5]) == (130, [(130, 131)])
    # a last block of 6: 4 gemm columns, then 2 gemv; a batch may start inside the gemv columns only
    assert plan_prefill(list(range(134)), [*list(range(133)), 5]) == (133, [(133, 134)])
    assert plan_prefill(list(range(134)), [*list(range(131)), 5, 6, 7]) == (128, [(128, 134)])


def test_plan_prefill_constants_are_the_ones_the_module_documents():
    assert (emb.BLOCK_TOKENS, emb.FA_TILE_ROWS, emb.KQUANT_TILED_ROWS, emb.REPACK_GROUP) == (128, 64, 8, 4)


def test_thread_wait_defaults_to_a_short_spin_and_keeps_the_users_choice():
    empty: dict[str, str] = {}
    emb.set_thread_wait(empty)
    assert empty == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000"}
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "0"}):
        env = dict(mine)
        emb.set_thread_wait(env)
        assert env == mine  # a wait policy or spin count the user set is left alone, and nothing is added
