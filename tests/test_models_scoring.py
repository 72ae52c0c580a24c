"""Answer distributions from model outputs: top-logprob parsing, answer matching, sampling, greedy."""

from __future__ import annotations

import math

import pytest
from models_fixtures import make_prompt

from selfalign.models import scoring
from selfalign.models.types import ScoringMethod

PROMPT = make_prompt("How important is religion in your life?")


def test_top_logprobs_renormalised_over_labels_with_off_option_mass():
    # A 0.5 + " A" 0.1 -> A 0.6; B 0.2; "The" 0.15 and lowercase "b" 0.05 are not labels
    top = [
        ("A", math.log(0.5)),
        (" A", math.log(0.1)),
        ("B", math.log(0.2)),
        ("The", math.log(0.15)),
        ("b", math.log(0.05)),
    ]
    dist = scoring.from_top_logprobs(PROMPT, top, raw_answer="A")
    assert dist.method is ScoringMethod.LOGPROB
    assert dist.probs == pytest.approx((0.75, 0.25, 0.0, 0.0))
    assert dist.off_option_mass == pytest.approx(0.2)
    assert dist.ok and dist.argmax == 0


def test_top_logprobs_bracketed_and_punctuated_labels_count():
    top = [("(C", math.log(0.3)), ("D.", math.log(0.3)), ("\nC", math.log(0.1))]
    dist = scoring.from_top_logprobs(PROMPT, top)
    assert dist.probs == pytest.approx((0.0, 0.0, 0.4 / 0.7, 0.3 / 0.7))
    assert dist.off_option_mass == pytest.approx(0.3)


def test_top_logprobs_without_any_label_is_invalid_not_coerced():
    dist = scoring.from_top_logprobs(PROMPT, [("\n\n", -0.5), ("Question", -1.2)], raw_answer="\n\n")
    assert dist.invalid and not dist.ok and dist.probs == ()
    assert dist.raw_answer == "\n\n" and dist.argmax is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", 1),
        (" B ", 1),
        ("(B)", 1),
        ("B.", 1),
        ("B) Rather important", 1),
        ("C: whatever follows", 2),
        ("Not at all important", 3),
        ("not at all important.", 3),
        ("B Rather important", 1),
        ("A lot", None),
        ("a", None),
        ("Maybe", None),
        ("", None),
        ("B Not very important", None),
        ("Important", None),
        ("E", None),
    ],
)
def test_match_answer(answer, expected):
    assert scoring.match_answer(answer, PROMPT) == expected


def test_samples_counted_unmatched_are_off_option():
    dist = scoring.from_samples(PROMPT, ["A", "B", "no idea", "A"])
    assert dist.method is ScoringMethod.SAMPLE
    assert dist.probs == pytest.approx((2 / 3, 1 / 3, 0, 0))
    assert dist.off_option_mass == pytest.approx(0.25)
    assert dist.extra["counts"] == [2, 1, 0, 0]


def test_samples_all_unmatched_is_invalid():
    dist = scoring.from_samples(PROMPT, ["perhaps", "it depends"])
    assert dist.invalid and dist.probs == () and dist.off_option_mass == 1.0 and dist.raw_answer == "perhaps"


def test_greedy_one_hot_or_invalid():
    assert scoring.from_greedy(PROMPT, "D").probs == (0.0, 0.0, 0.0, 1.0)
    bad = scoring.from_greedy(PROMPT, "I would rather not say")
    assert bad.invalid and bad.method is ScoringMethod.GREEDY and bad.raw_answer == "I would rather not say"


def test_option_logprobs_are_length_normalised_then_softmaxed():
    # option 0: one token at -1; option 1: three tokens at -1 each -> same mean, same probability
    dist = scoring.from_option_logprobs(make_prompt("q", ("x", "y")), [[-1.0], [-1.0, -1.0, -1.0]])
    assert dist.probs == pytest.approx((0.5, 0.5))
    dist = scoring.from_option_logprobs(make_prompt("q", ("x", "y")), [[-1.0], [-2.0]])
    assert dist.probs == pytest.approx((1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))))
    assert sum(dist.probs) == pytest.approx(1.0)
