"""From model outputs to answer distributions: pure functions, no model and no network.

- :func:`from_option_logprobs`: the embedded model's exact scoring. Each option's score is its
  length-normalised log-probability (the mean of its tokens' log-probabilities, so long option texts are not
  penalised for their length); a softmax over the options' scores gives the probabilities.
- :func:`from_top_logprobs`: chat models. ``top_logprobs`` of the first answer token are mapped to the option
  labels (whitespace and bracketing stripped, so ``"A"``, ``" A"`` and ``"(A"`` all count for A, summed),
  renormalised over the labels; the mass outside them is kept as ``off_option_mass``.
- :func:`match_answer`, :func:`from_samples`, :func:`from_greedy`: free-text answers matched by label or by
  the exact option text; an answer that matches nothing is invalid, never coerced into an option.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from selfalign.models.types import AnswerDistribution, RenderedPrompt, ScoringMethod

_STRIP = " \t\r\n\"'`*_()[]{}.:;,!"
_LABEL_RE = re.compile(r"^\(?([A-Za-z])\s*[\).:]")


def softmax(scores: Sequence[float]) -> tuple[float, ...]:
    """Softmax of scores (shifted by their maximum for stability); sums to 1."""
    peak = max(scores)
    weights = [math.exp(s - peak) for s in scores]
    total = sum(weights)
    probs = [w / total for w in weights]
    # make the sum exactly 1 within float error for AnswerDistribution's check
    return tuple(probs)


def from_option_logprobs(prompt: RenderedPrompt, token_logprobs: Sequence[Sequence[float]]) -> AnswerDistribution:
    """The distribution from each option's token log-probabilities (length-normalised, then softmax)."""
    if len(token_logprobs) != len(prompt.options):
        raise ValueError("one list of token log-probabilities per option is needed")
    means = [sum(lp) / len(lp) for lp in token_logprobs]
    return AnswerDistribution(
        options=prompt.options,
        probs=softmax(means),
        method=ScoringMethod.LOGPROB,
        extra={"option_scores": [round(m, 6) for m in means]},
    )


def _norm_token(token: str) -> str:
    return token.strip(_STRIP)


def from_top_logprobs(
    prompt: RenderedPrompt, top_logprobs: Sequence[tuple[str, float]], raw_answer: str | None = None
) -> AnswerDistribution:
    """The distribution over ``prompt.labels`` from the top log-probabilities of the first answer token.

    Tokens are matched to labels after stripping whitespace and brackets/punctuation (case-sensitive: a
    lowercase ``a`` is a word, not the label A); duplicates are summed. The label masses are renormalised; the
    probability that fell elsewhere (other tokens, or outside the top-k) is ``off_option_mass``. When no top
    token is a label, the result is invalid.
    """
    index = {label: i for i, label in enumerate(prompt.labels)}
    mass = [0.0] * len(prompt.labels)
    seen = 0.0
    for token, logprob in top_logprobs:
        p = math.exp(logprob)
        seen += p
        i = index.get(_norm_token(token))
        if i is not None:
            mass[i] += p
    total = sum(mass)
    off = max(0.0, 1.0 - total)
    if total <= 0.0:
        return AnswerDistribution(
            options=prompt.options,
            probs=(),
            method=ScoringMethod.LOGPROB,
            off_option_mass=1.0,
            invalid=True,
            raw_answer=raw_answer,
            extra={"top_mass_seen": round(seen, 6)},
        )
    return AnswerDistribution(
        options=prompt.options,
        probs=tuple(m / total for m in mass),
        method=ScoringMethod.LOGPROB,
        off_option_mass=off,
        raw_answer=raw_answer,
    )


def field_of(item: Any, name: str) -> Any:
    """``item[name]`` for a dict, ``item.name`` for an object (LiteLLM and DSPy return either), else None."""
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def first_token_top_logprobs(logprobs: Any) -> list[tuple[str, float]]:
    """(token, logprob) pairs of the first answer token's ``top_logprobs`` (OpenAI format); empty when none."""
    content = field_of(logprobs, "content") if logprobs is not None else None
    if not content:
        return []
    pairs: list[tuple[str, float]] = []
    for item in field_of(content[0], "top_logprobs") or []:
        token, logprob = field_of(item, "token"), field_of(item, "logprob")
        if token is not None and logprob is not None:
            pairs.append((str(token), float(logprob)))
    return pairs


def _canon_text(text: str) -> str:
    return " ".join(text.strip(_STRIP).split()).casefold()


def match_answer(answer: str | None, prompt: RenderedPrompt) -> int | None:
    """The option an answer names, or None.

    Accepted: the label alone (``B``, ``(B)``, ``B.``), the label followed by ``)``, ``.`` or ``:`` and any
    text (``B) Rather important``), the exact option text or continuation (case and surrounding punctuation
    ignored), or the label followed by the exact option text. Anything else is not an answer.
    """
    if answer is None:
        return None
    text = answer.strip()
    if not text:
        return None
    first_line = text.splitlines()[0].strip()
    bare = first_line.strip(_STRIP)
    labels = {label: i for i, label in enumerate(prompt.labels)}
    if bare in labels:
        return labels[bare]
    found = _LABEL_RE.match(first_line)
    if found and found.group(1) in labels:
        return labels[found.group(1)]
    canon = _canon_text(first_line)
    texts = {}
    for i, (option, cont) in enumerate(zip(prompt.options, prompt.continuations, strict=True)):
        texts.setdefault(_canon_text(option), i)
        texts.setdefault(_canon_text(cont), i)
    if canon in texts:
        return texts[canon]
    head, _, rest = first_line.partition(" ")
    if head.strip(_STRIP) in labels and texts.get(_canon_text(rest)) == labels[head.strip(_STRIP)]:
        return labels[head.strip(_STRIP)]
    return None


def from_samples(prompt: RenderedPrompt, answers: Sequence[str]) -> AnswerDistribution:
    """The distribution from sampled answers: counts of matched options over the matched answers.

    ``off_option_mass`` is the share of answers that matched no option; when none matched, the result is
    invalid (``probs`` empty).
    """
    counts = [0] * len(prompt.options)
    unmatched: list[str] = []
    for answer in answers:
        i = match_answer(answer, prompt)
        if i is None:
            unmatched.append(answer)
        else:
            counts[i] += 1
    n = len(answers)
    matched = n - len(unmatched)
    extra = {"n": n, "counts": counts}
    if matched == 0:
        return AnswerDistribution(
            options=prompt.options,
            probs=(),
            method=ScoringMethod.SAMPLE,
            off_option_mass=1.0,
            invalid=True,
            raw_answer=unmatched[0] if unmatched else None,
            extra=extra,
        )
    return AnswerDistribution(
        options=prompt.options,
        probs=tuple(c / matched for c in counts),
        method=ScoringMethod.SAMPLE,
        off_option_mass=len(unmatched) / n,
        raw_answer=unmatched[0] if unmatched else None,
        extra=extra,
    )


def from_greedy(prompt: RenderedPrompt, answer: str) -> AnswerDistribution:
    """One-hot on the option the answer names; invalid (with the raw answer) when it names none."""
    i = match_answer(answer, prompt)
    if i is None:
        return AnswerDistribution(
            options=prompt.options,
            probs=(),
            method=ScoringMethod.GREEDY,
            off_option_mass=1.0,
            invalid=True,
            raw_answer=answer,
        )
    return AnswerDistribution(
        options=prompt.options,
        probs=tuple(1.0 if j == i else 0.0 for j in range(len(prompt.options))),
        method=ScoringMethod.GREEDY,
        raw_answer=answer,
    )
