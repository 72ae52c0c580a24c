"""Plain types handed between the programs and the model layer."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any


class ScoringMethod(StrEnum):
    """How an answer distribution was obtained."""

    LOGPROB = "logprob"  # exact: token log-probabilities of the options (in-process, or chat top_logprobs)
    COMPLETION = "completion"  # exact, served: each option scored as a continuation by a text-completions server
    SAMPLE = "sample"  # n sampled answers at a temperature, counted
    GREEDY = "greedy"  # one answer, one-hot (last resort)
    VERBALIZED = "verbalized"  # the model states the share of respondents choosing each option


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class RenderedPrompt:
    """One probe rendered for both kinds of model.

    - ``text`` is a plain transcript for base (text-completion) models such as the embedded Gemma 3 270M;
      it ends just before the answer (e.g. ``"...\\nAnswer:"``) and the model scores each of
      ``continuations`` (e.g. ``" Very important"``) as its continuation.
    - ``messages`` is the chat rendering for chat models: the options appear labelled with ``labels``
      (``A``, ``B``, ...) and the model is asked to reply with the label alone.

    ``options`` are the option texts (as shown, in order); all three tuples have the same length.
    """

    text: str
    continuations: tuple[str, ...]
    messages: tuple[dict[str, str], ...]
    labels: tuple[str, ...]
    options: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.options)
        if n < 2:
            raise ValueError("a probe needs at least two options")
        if len(self.continuations) != n or len(self.labels) != n:
            raise ValueError("options, continuations and labels must have the same length")


@dataclass(frozen=True)
class AnswerDistribution:
    """The model's probability for each option of one probe, and how it was obtained.

    ``probs`` sums to 1 over the options when the call succeeded (``error is None``) and the answer was
    valid; it is empty when the call failed. ``off_option_mass`` is the probability that fell outside the
    options before renormalising (logprob on chat models) or the share of sampled answers that matched no
    option (sample). ``invalid`` marks an answer (greedy) or all answers (sample) that matched no option:
    such a result is never coerced into an option.
    """

    options: tuple[str, ...]
    probs: tuple[float, ...]
    method: ScoringMethod
    off_option_mass: float = 0.0
    invalid: bool = False
    error: str | None = None
    raw_answer: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failure(cls, prompt: RenderedPrompt, method: ScoringMethod, error: str) -> AnswerDistribution:
        """A failed result for ``prompt``: no probabilities, ``error`` set (never cached, never an answer)."""
        return cls(options=prompt.options, probs=(), method=method, error=error)

    @property
    def ok(self) -> bool:
        """True when the distribution can be counted as an answer."""
        return self.error is None and not self.invalid and len(self.probs) == len(self.options)

    @property
    def argmax(self) -> int | None:
        """Index of the most likely option (first on a tie), or None when not ok."""
        if not self.ok:
            return None
        best = max(self.probs)
        return next(i for i, p in enumerate(self.probs) if p == best)

    def __post_init__(self) -> None:
        if self.error is None and not self.invalid and self.probs:
            total = sum(self.probs)
            if not math.isclose(total, 1.0, abs_tol=1e-6):
                raise ValueError(f"option probabilities sum to {total}, not 1")


def dist_to_json(dist: AnswerDistribution) -> dict[str, Any]:
    """A JSON-ready dict of a distribution (``cached`` is not stored)."""
    data = {f.name: getattr(dist, f.name) for f in fields(dist) if f.name != "cached"}
    data["method"] = str(dist.method)
    data["options"] = list(dist.options)
    data["probs"] = list(dist.probs)
    data["extra"] = copy.deepcopy(dist.extra)  # the one nested field (dataclasses.asdict copied it all: slower)
    return data


def dist_from_json(data: dict[str, Any], *, cached: bool = True) -> AnswerDistribution:
    """Inverse of :func:`dist_to_json`."""
    values = dict(data)
    values["options"] = tuple(values["options"])
    values["probs"] = tuple(values["probs"])
    values["method"] = ScoringMethod(values["method"])
    values["cached"] = cached
    return AnswerDistribution(**values)
