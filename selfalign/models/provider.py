"""The ``selfalign`` LiteLLM custom provider: the embedded model and the routes of selfalign's DSPy LMs.

``litellm.completion(model="selfalign/gemma-3-270m", messages=[...])`` reaches the handler of :func:`provider_class`:

- ordinary generation renders the chat messages into a plain transcript (the model is a base model) and
  generates; ``max_tokens``, ``temperature``, ``stop``, ``n`` and ``seed`` are honoured;
- option scoring: a request that carries ``selfalign_score={"text": ..., "continuations": [...]}`` (directly
  or inside ``extra_body``) is answered with per-option token log-probabilities in
  ``response._hidden_params["selfalign_scores"]`` (see :meth:`EmbeddedModel.score`); one that carries
  ``selfalign_score={"probes": [{"text": ..., "continuations": [...]}, ...]}`` scores the probes in order and
  answers ``{"probes": [...]}``, one entry per probe: its scores with ``evaluated_tokens`` and ``seconds``, or
  ``{"error": "..."}`` for a probe the model cannot score (a prompt longer than its context), so that one bad
  probe fails alone. The client sends its probes this way, ``batch_size`` a request: LiteLLM's own work on a
  call (a few milliseconds) is then paid once per batch, not once per probe.

``selfalign/cached/<route>`` is answered by the route's :class:`~selfalign.models.client.ModelClient` (see
:mod:`selfalign.models.routes`): a survey scoring request (``selfalign_request``, from the survey adapter)
becomes ``client.score(prompt)`` (with the request's ``method``, when it names one) and its distribution
travels back in ``choices[0].logprobs``; any other
request is a generation through ``client.complete``. So DSPy programs use the one selfalign cache, retries
and accounting while every call still travels through LiteLLM at both ends.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from selfalign.errors import ModelError, UnknownChoiceError
from selfalign.models import routes
from selfalign.models.types import dist_to_json
from selfalign.models.wire import (
    CACHED_PREFIX,
    DIST_KEY,
    EMBEDDED_MODELS,
    EMBEDDED_PROVIDER,
    REQUEST_PARAM,
    SCORE_PARAM,
    SCORES_KEY,
    decode_prompt,
    request_of,
)


def render_transcript(messages: list[dict[str, Any]]) -> str:
    """Render chat messages as a plain transcript for a base model.

    One user message is used verbatim (that is how callers send a ready transcript); otherwise system text
    comes first, then ``User:`` / ``Assistant:`` turns, ending with ``Assistant:`` for the model to continue.
    """

    def text_of(message: dict[str, Any]) -> str:
        content = message.get("content") or ""
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)

    if len(messages) == 1 and messages[0].get("role", "user") == "user":
        return text_of(messages[0])
    parts: list[str] = []
    for message in messages:
        role = message.get("role", "user")
        content = text_of(message)
        if role in ("system", "developer"):
            parts.append(content.rstrip() + "\n\n")
        elif role == "assistant":
            parts.append(f"Assistant: {content}\n")
        else:
            parts.append(f"User: {content}\n")
    parts.append("Assistant:")
    return "".join(parts)


def _usage(litellm: Any, prompt_tokens: int, completion_tokens: int) -> Any:
    return litellm.Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )


_provider_cls: Any = None


def provider_class() -> type:
    """The registered handler class, a ``litellm.CustomLLM`` subclass (defined on first use: LiteLLM is lazy)."""
    global _provider_cls
    if _provider_cls is not None:
        return _provider_cls
    from litellm import CustomLLM

    class SelfAlignProvider(CustomLLM):
        """LiteLLM custom handler for ``selfalign/...`` model strings (embedded model and DSPy routes)."""

        def completion(
            self,
            model: str,
            messages: list,
            api_base: str,
            custom_prompt_dict: dict,
            model_response: Any,
            print_verbose: Any,
            encoding: Any,
            api_key: Any,
            logging_obj: Any,
            optional_params: dict,
            acompletion: Any = None,
            litellm_params: Any = None,
            logger_fn: Any = None,
            headers: Any = None,
            timeout: Any = None,
            client: Any = None,
        ) -> Any:
            return _complete(model, messages, optional_params, model_response)

        async def acompletion(
            self,
            model: str,
            messages: list,
            api_base: str,
            custom_prompt_dict: dict,
            model_response: Any,
            print_verbose: Any,
            encoding: Any,
            api_key: Any,
            logging_obj: Any,
            optional_params: dict,
            acompletion: Any = None,
            litellm_params: Any = None,
            logger_fn: Any = None,
            headers: Any = None,
            timeout: Any = None,
            client: Any = None,
        ) -> Any:
            return await asyncio.to_thread(_complete, model, messages, optional_params, model_response)

    _provider_cls = SelfAlignProvider
    return _provider_cls


def _max_tokens(optional_params: dict[str, Any], default: int) -> int:
    return int(optional_params.get("max_tokens") or optional_params.get("max_completion_tokens") or default)


def _complete(model: str, messages: list, optional_params: dict, model_response: Any) -> Any:
    import litellm

    full = model if model.startswith(EMBEDDED_PROVIDER + "/") else f"{EMBEDDED_PROVIDER}/{model}"
    if full.startswith(f"{EMBEDDED_PROVIDER}/{CACHED_PREFIX}"):
        route = full[len(f"{EMBEDDED_PROVIDER}/{CACHED_PREFIX}") :]
        return _complete_route(litellm, route, messages, optional_params, model_response)
    if full not in EMBEDDED_MODELS:
        raise UnknownChoiceError("model", full, EMBEDDED_MODELS)
    from selfalign.models.embedded import get_embedded_model

    engine = get_embedded_model()
    score = request_of(optional_params, SCORE_PARAM)
    model_response.model = full
    if score is not None:
        model_response.choices[0].message.content = ""
        model_response.choices[0].finish_reason = "stop"
        if "probes" in score:
            results = [_score_probe(engine, probe) for probe in score["probes"]]
            model_response._hidden_params[SCORES_KEY] = {"probes": results}
            model_response.usage = _usage(litellm, sum(r.get("evaluated_tokens", 0) for r in results), 0)
            return model_response
        result = engine.score(str(score["text"]), [str(c) for c in score["continuations"]])
        model_response._hidden_params[SCORES_KEY] = result.as_dict()
        model_response.usage = _usage(litellm, result.evaluated_tokens, 0)
        return model_response
    prompt = render_transcript(messages)
    n = int(optional_params.get("n") or 1)
    stop = optional_params.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for i in range(n):
        seed = optional_params.get("seed")
        gen = engine.generate(
            prompt,
            max_tokens=_max_tokens(optional_params, 256),
            temperature=float(optional_params.get("temperature") or 0.0),
            stop=tuple(stop),
            seed=None if seed is None else int(seed) + i,
        )
        message = litellm.Message(role="assistant", content=gen.text)
        choices.append(litellm.Choices(index=i, finish_reason=gen.finish_reason, message=message))
        prompt_tokens += gen.evaluated_prompt_tokens
        completion_tokens += gen.completion_tokens
    model_response.choices = choices
    model_response.usage = _usage(litellm, prompt_tokens, completion_tokens)
    return model_response


def _score_probe(engine: Any, probe: dict[str, Any]) -> dict[str, Any]:
    """One probe of a batched scoring request: its scores, or the reason the model cannot score it."""
    start = time.perf_counter()
    try:
        result = engine.score(str(probe["text"]), [str(c) for c in probe["continuations"]])
    except ModelError as exc:
        return {"error": str(exc)}
    return {**result.as_dict(), "evaluated_tokens": result.evaluated_tokens, "seconds": time.perf_counter() - start}


def _complete_route(litellm: Any, route: str, messages: list, optional_params: dict, model_response: Any) -> Any:
    client = routes.lookup(route)
    model_response.model = f"{EMBEDDED_PROVIDER}/{CACHED_PREFIX}{route}"
    request = request_of(optional_params, REQUEST_PARAM)
    choice = model_response.choices[0]
    choice.finish_reason = "stop"
    if request is not None and request.get("kind") == "score":
        dist = client.score(decode_prompt(request["prompt"]), method=request.get("method"))
        best = dist.argmax
        choice.message.content = dist.options[best] if best is not None else (dist.raw_answer or "")
        choice.logprobs = {DIST_KEY: dist_to_json(dist)}
        fresh = not dist.cached and dist.error is None
        model_response.usage = _usage(
            litellm, dist.prompt_tokens if fresh else 0, dist.completion_tokens if fresh else 0
        )
        return model_response
    before = (client.stats.prompt_tokens, client.stats.completion_tokens)
    choice.message.content = client.complete(
        [dict(m) for m in messages],
        max_tokens=_max_tokens(optional_params, 512),
        temperature=float(optional_params.get("temperature") or 0.0),
    )
    model_response.usage = _usage(
        litellm, client.stats.prompt_tokens - before[0], client.stats.completion_tokens - before[1]
    )
    return model_response
