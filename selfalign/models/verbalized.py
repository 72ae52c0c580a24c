"""The ``verbalized`` method: the model states what share of the respondents would choose each option.

Meister et al. (NAACL 2025) found that language models describe a population's answer distribution better
than they simulate it by their own answer probabilities. The probe's chat rendering (persona, demonstrations,
lettered options) is kept and its last turn asks, instead of one letter, for one line per option with the
percentage of the respondents who would choose it. The reply is parsed strictly: every option must get
exactly one non-negative share (by its letter or its exact text); anything else is off-format and the
result is invalid, with the raw reply kept. Valid shares are renormalised to sum to 1 (the stated total is
kept in ``extra["stated_total"]``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from selfalign.models.types import AnswerDistribution, RenderedPrompt, ScoringMethod

VERBALIZED_SCORING = "verbalized/v1"  # bump when the instruction or the parsing changes
INSTRUCTION = (
    "Do not answer with one letter. Instead, estimate how the respondents described or shown here would "
    "answer this question as a group: for each option, the percentage of them who would choose it. Reply "
    'with one line per option, the option\'s letter, a colon and the percentage (for example "{first}: 40%"), '
    "the percentages adding up to 100, and nothing else."
)
_NUMBER = r"(\d+(?:[.,]\d+)?)"
_LABELLED = re.compile(rf"^\W*\(?([A-Za-z])\)?\s*[\).:=\-–]\s*(?:[^\d\n]*?[:=\-–]\s*)?{_NUMBER}\s*%?\s*$")
_TEXTUAL = re.compile(rf"^\W*(.+?)\s*[:=\-–]\s*{_NUMBER}\s*%?\s*$")
_STRIP = " \t*_\"'`"


def max_tokens_for(prompt: RenderedPrompt) -> int:
    """Enough tokens for one short line per option."""
    return 16 + 12 * len(prompt.options)


def messages(prompt: RenderedPrompt) -> list[dict[str, str]]:
    """The probe's chat messages with the last user turn asking for the shares instead of a letter."""
    shown = [dict(m) for m in prompt.messages]
    ask = INSTRUCTION.format(first=prompt.labels[0])
    if shown and shown[-1].get("role") == "user":
        shown[-1]["content"] = f"{shown[-1].get('content', '').rstrip()}\n\n{ask}"
    else:
        shown.append({"role": "user", "content": ask})
    return shown


def _canon(text: str) -> str:
    return " ".join(text.strip(_STRIP).split()).casefold()


def _number(text: str) -> float:
    return float(text.replace(",", "."))


def parse_shares(reply: str, labels: Sequence[str], options: Sequence[str]) -> list[float] | None:
    """The stated share of each option (in option order), or None when the reply is off-format.

    Each line that names an option (``B: 30%``, ``B) 30``, ``(B) 30 %``, ``B. Rather important: 30%``, or the
    exact option text followed by ``:`` and the share) sets its share; lines that name no option are ignored.
    Off-format: an option without a share, an option named twice with different shares, or a share that is
    not a non-negative number.
    """
    by_label = {label: i for i, label in enumerate(labels)}
    by_text = {_canon(o): i for i, o in enumerate(options)}
    shares: list[float | None] = [None] * len(options)
    for raw in reply.splitlines():
        line = raw.strip().strip(_STRIP)
        if not line:
            continue
        index: int | None = None
        value: float | None = None
        labelled = _LABELLED.match(line)
        if labelled and labelled.group(1) in by_label:
            index, value = by_label[labelled.group(1)], _number(labelled.group(2))
        else:
            textual = _TEXTUAL.match(line)
            if textual and _canon(textual.group(1)) in by_text:
                index, value = by_text[_canon(textual.group(1))], _number(textual.group(2))
        if index is None or value is None:
            continue
        if shares[index] is not None and shares[index] != value:
            return None
        shares[index] = value
    if any(s is None or s < 0 for s in shares):
        return None
    return [float(s) for s in shares if s is not None]


def from_reply(prompt: RenderedPrompt, reply: str) -> AnswerDistribution:
    """The distribution a verbalized reply states: shares renormalised; invalid (raw reply kept) when off-format."""
    shares = parse_shares(reply, prompt.labels, prompt.options)
    total = sum(shares) if shares is not None else 0.0
    if shares is None or total <= 0:
        return AnswerDistribution(
            options=prompt.options,
            probs=(),
            method=ScoringMethod.VERBALIZED,
            off_option_mass=1.0,
            invalid=True,
            raw_answer=reply,
        )
    extra: dict[str, Any] = {"stated": [round(s, 6) for s in shares], "stated_total": round(total, 6)}
    return AnswerDistribution(
        options=prompt.options,
        probs=tuple(s / total for s in shares),
        method=ScoringMethod.VERBALIZED,
        raw_answer=reply,
        extra=extra,
    )
