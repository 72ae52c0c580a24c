"""What travels between selfalign's layers inside LiteLLM requests and replies: names and encodings.

- ``selfalign/<name>`` is the embedded model's LiteLLM provider (``selfalign/gemma-3-270m``);
  ``selfalign/cached/<route>`` is the route of a DSPy LM built by :func:`selfalign.models.dspy_lm`, answered by
  that route's :class:`~selfalign.models.client.ModelClient` (cache, retries, accounting).
- A scoring request from the survey adapter carries ``selfalign_request={"kind": "score", "prompt": ...}``
  (the rendered prompt, :func:`encode_prompt`; ``"method"`` when the adapter asks for one); the reply
  carries the answer distribution in ``choices[0].logprobs[DIST_KEY]`` (DSPy passes ``logprobs`` through to
  the adapter, while it drops values a provider keeps in ``_hidden_params``).
- Exact option scores of the embedded provider are asked for with ``selfalign_score={"text": ...,
  "continuations": [...]}``, or for several probes in one call with ``selfalign_score={"probes": [{"text": ...,
  "continuations": [...]}, ...]}`` (what the client sends, ``batch_size`` probes a call); they come back in
  ``_hidden_params[SCORES_KEY]`` (the client calls LiteLLM directly, so hidden values survive).
"""

from __future__ import annotations

from typing import Any

from selfalign import DEFAULT_MODEL
from selfalign.models.types import RenderedPrompt

EMBEDDED_PROVIDER = "selfalign"
EMBEDDED_MODELS = (DEFAULT_MODEL,)
CACHED_PREFIX = "cached/"
ROUTE_PREFIX = f"{EMBEDDED_PROVIDER}/{CACHED_PREFIX}"
REQUEST_PARAM = "selfalign_request"
DIST_KEY = "selfalign_distribution"
SCORE_PARAM = "selfalign_score"
SCORES_KEY = "selfalign_scores"


def encode_prompt(prompt: RenderedPrompt) -> dict[str, Any]:
    """A rendered prompt as plain JSON-ready data."""
    return {
        "text": prompt.text,
        "continuations": list(prompt.continuations),
        "messages": [dict(m) for m in prompt.messages],
        "labels": list(prompt.labels),
        "options": list(prompt.options),
    }


def decode_prompt(data: dict[str, Any]) -> RenderedPrompt:
    """Inverse of :func:`encode_prompt`."""
    return RenderedPrompt(
        text=str(data["text"]),
        continuations=tuple(str(c) for c in data["continuations"]),
        messages=tuple({str(k): str(v) for k, v in m.items()} for m in data["messages"]),
        labels=tuple(str(label) for label in data["labels"]),
        options=tuple(str(o) for o in data["options"]),
    )


def request_of(optional_params: dict[str, Any], name: str) -> Any:
    """The selfalign parameter ``name`` of a LiteLLM call, given directly or inside ``extra_body``."""
    value = optional_params.get(name)
    if value is None:
        extra = optional_params.get("extra_body") or {}
        value = extra.get(name) if isinstance(extra, dict) else None
    return value
