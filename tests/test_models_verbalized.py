# ruff: noqa: F811
"""The verbalized method: the model states the share of respondents per option; strict parsing, renormalised."""

from __future__ import annotations

import pytest
from models_fixtures import loopback, make_prompt, result_cache  # noqa: F401

from selfalign.models import ModelClient, ScoringMethod, verbalized
from selfalign.models.loopback import Reply

P = make_prompt("How important is religion in your life?")  # A-D: Very / Rather / Not very / Not at all important
LONG_LABELLED = (
    "A. Very important: 35%\nB. Rather important: 35%\nC. Not very important: 20%\nD. Not at all important: 10%"
)
BY_TEXT = "Very important: 0.5\nRather important: 0.25\nNot very important: 0.125\nNot at all important: 0.125"


@pytest.mark.parametrize(
    ("reply", "shares"),
    [
        ("A: 40%\nB: 30%\nC: 20%\nD: 10%", [40, 30, 20, 10]),
        ("A) 40\nB) 30\nC) 20\nD) 10", [40, 30, 20, 10]),
        ("Here are my estimates:\n(A) 50 %\n(B) 25 %\n(C) 15 %\n(D) 10 %", [50, 25, 15, 10]),
        (LONG_LABELLED, [35, 35, 20, 10]),
        (BY_TEXT, [0.5, 0.25, 0.125, 0.125]),
        ("A: 12.5%\nB: 37,5%\nC: 25%\nD: 25%", [12.5, 37.5, 25, 25]),
    ],
)
def test_well_formed_replies_are_parsed(reply: str, shares: list[float]):
    assert verbalized.parse_shares(reply, P.labels, P.options) == pytest.approx(shares)


@pytest.mark.parametrize(
    "reply",
    [
        "A: 40%\nB: 30%\nC: 30%",  # an option without a share
        "A: 40%\nA: 20%\nB: 20%\nC: 10%\nD: 10%",  # an option named twice with different shares
        "B",  # a letter, not shares
        "Most people would say it is very important.",
        "A: 0%\nB: 0%\nC: 0%\nD: 0%",  # nothing to renormalise
        "",
    ],
)
def test_off_format_replies_are_invalid_with_the_raw_reply_kept(reply: str):
    dist = verbalized.from_reply(P, reply)
    assert dist.invalid and not dist.ok and dist.probs == () and dist.raw_answer == reply
    assert dist.method is ScoringMethod.VERBALIZED


def test_shares_are_renormalised_and_the_stated_total_kept():
    dist = verbalized.from_reply(P, "A: 50%\nB: 30%\nC: 30%\nD: 10%")  # 120 in all
    assert dist.ok and dist.probs == pytest.approx((50 / 120, 30 / 120, 30 / 120, 10 / 120))
    assert dist.extra["stated_total"] == 120 and dist.extra["stated"] == [50, 30, 30, 10]


def test_the_prompt_keeps_the_probe_and_asks_for_shares():
    demo = make_prompt("How important is God in your life?", demos=[("How important is family?", "Very important")])
    shown = verbalized.messages(demo)
    assert shown[:-1] == [dict(m) for m in demo.messages[:-1]]  # persona and demonstrations as they were
    assert shown[-1]["content"].startswith(demo.messages[-1]["content"])
    assert "percentage" in shown[-1]["content"] and '"A: 40%"' in shown[-1]["content"]


def test_client_asks_once_caches_and_records_the_method(loopback, result_cache):
    server = loopback(policy=lambda body, i: Reply("A: 60%\nB: 20%\nC: 15%\nD: 5%"))
    c = ModelClient("openai/chat", api_base=server.api_base, cache=result_cache, method="verbalized")
    dist = c.score(P)
    assert dist.ok and dist.method is ScoringMethod.VERBALIZED and dist.probs == pytest.approx((0.6, 0.2, 0.15, 0.05))
    body = server.requests[0]
    assert body["temperature"] == 0 and "percentage" in body["messages"][-1]["content"] and "n" not in body
    again = ModelClient("openai/chat", api_base=server.api_base, cache=result_cache, method="verbalized").score(P)
    assert again.cached and server.request_count == 1
    # another method is another cache entry
    ModelClient("openai/chat", api_base=server.api_base, cache=result_cache, method="greedy").score(P)
    assert server.request_count == 2


def test_adapter_reads_a_foreign_lm_verbally(loopback):
    import dspy

    from selfalign.adapter import SurveyAdapter

    server = loopback(policy=lambda body, i: Reply("A: 10%\nB: 20%\nC: 30%\nD: 40%"))
    lm = dspy.LM("openai/foreign", api_base=server.api_base, api_key="no-key", cache=False, num_retries=0)
    dist = SurveyAdapter(method="verbalized").score(lm, P)
    assert dist.ok and dist.method is ScoringMethod.VERBALIZED and dist.probs == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert "percentage" in server.requests[0]["messages"][-1]["content"]


def test_adapter_passes_the_method_to_a_selfalign_lm(loopback, tmp_path):
    from selfalign.adapter import SurveyAdapter
    from selfalign.models.dspy_bridge import dspy_lm

    server = loopback(policy=lambda body, i: Reply("A: 25%\nB: 25%\nC: 25%\nD: 25%"))
    lm = dspy_lm("openai/routed", api_base=server.api_base, cache_dir=tmp_path / "cache")
    dist = SurveyAdapter(method="verbalized").score(lm, P)
    assert dist.ok and dist.method is ScoringMethod.VERBALIZED and dist.probs == pytest.approx((0.25,) * 4)
    assert "percentage" in lm.history[-1]["messages"][-1]["content"]  # what the model was shown
