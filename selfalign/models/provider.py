"""The ``selfalign`` LiteLLM custom provider: the embedded model, addressed like any other model string.

``litellm.completion(model="selfalign/gemma-3-270m", messages=[...])`` reaches the handler of :func:`provider_class`:

- ordinary generation renders the chat messages into a plain transcript (the model is a base model) and
  generates; ``max_tokens``, ``temperature``, ``stop``, ``n`` and ``seed`` are honoured;
- option scoring: a request that carries ``selfalign_score={"text": ..., "continuations": [...]}`` (directly
  or inside ``extra_body``) is answered with per-option token log-probabilities in
  ``response._hidden_params["selfalign_scores"]`` (see :meth:`EmbeddedModel.score`).

``selfalign/cached/<model>`` routes a generation call through :meth:`ModelClient.complete` of ``<model>``, so
that DSPy LMs (see :func:`selfalign.models.dspy_lm`) use the one selfalign cache, retries and accounting while
the call still travels through LiteLLM at both ends.

:func:`import_litellm` is the only place LiteLLM is imported: it sets ``LITELLM_LOCAL_MODEL_COST_MAP`` (no
internet), turns LiteLLM's own cache off and registers the provider.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from selfalign.models.config import EMBEDDED_MODELS, EMBEDDED_PROVIDER

SCORE_PARAM = "selfalign_score"
SCORES_KEY = "selfalign_scores"
CACHED_PREFIX = "cached/"

_lock = threading.Lock()
_litellm: Any = None


def import_litellm() -> Any:
    """Import LiteLLM once, offline and quiet, with the ``selfalign`` provider registered; return the module."""
    global _litellm
    if _litellm is not None:
        return _litellm
    with _lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            os.environ.setdefault("LITELLM_LOG", "ERROR")
            import litellm

            litellm.suppress_debug_info = True
            litellm.telemetry = False
            litellm.cache = None  # one cache only: selfalign's (see selfalign.models.cache)
            litellm.drop_params = True  # providers that lack a parameter (e.g. seed) ignore it
            _register(litellm)
            _litellm = litellm
    return _litellm


def _register(litellm: Any) -> None:
    entry = {"provider": EMBEDDED_PROVIDER, "custom_handler": provider_class()()}
    current = [p for p in (litellm.custom_provider_map or []) if p.get("provider") != EMBEDDED_PROVIDER]
    litellm.custom_provider_map = [*current, entry]
    # custom_provider_map is read when litellm sets up providers; refresh the registry when possible
    setup = getattr(getattr(litellm, "utils", None), "custom_llm_setup", None)
    if callable(setup):
        setup()


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


def _score_request(optional_params: dict[str, Any]) -> dict[str, Any] | None:
    request = optional_params.get(SCORE_PARAM)
    if request is None:
        extra = optional_params.get("extra_body") or {}
        request = extra.get(SCORE_PARAM) if isinstance(extra, dict) else None
    return request


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
        """LiteLLM custom handler for ``selfalign/...`` model strings (embedded model and cached routing)."""

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


def _complete(model: str, messages: list, optional_params: dict, model_response: Any) -> Any:
    litellm = import_litellm()
    full = model if model.startswith(EMBEDDED_PROVIDER + "/") else f"{EMBEDDED_PROVIDER}/{model}"
    if full.startswith(f"{EMBEDDED_PROVIDER}/{CACHED_PREFIX}"):
        return _complete_cached(
            full[len(f"{EMBEDDED_PROVIDER}/{CACHED_PREFIX}") :], messages, optional_params, model_response
        )
    if full not in EMBEDDED_MODELS:
        from selfalign.errors import UnknownChoiceError

        raise UnknownChoiceError("model", full, EMBEDDED_MODELS)
    from selfalign.models.embedded import get_embedded_model

    engine = get_embedded_model()
    score = _score_request(optional_params)
    model_response.model = full
    if score is not None:
        result = engine.score(str(score["text"]), [str(c) for c in score["continuations"]])
        model_response.choices[0].message.content = ""
        model_response.choices[0].finish_reason = "stop"
        model_response._hidden_params[SCORES_KEY] = result.as_dict()
        model_response.usage = _usage(litellm, result.evaluated_tokens, 0)
        return model_response
    prompt = render_transcript(messages)
    n = int(optional_params.get("n") or 1)
    stop = optional_params.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    texts, prompt_tokens, completion_tokens = [], 0, 0
    for i in range(n):
        seed = optional_params.get("seed")
        gen = engine.generate(
            prompt,
            max_tokens=int(optional_params.get("max_tokens") or optional_params.get("max_completion_tokens") or 256),
            temperature=float(optional_params.get("temperature") or 0.0),
            stop=tuple(stop),
            seed=None if seed is None else int(seed) + i,
        )
        texts.append((gen.text, gen.finish_reason))
        prompt_tokens += gen.evaluated_prompt_tokens
        completion_tokens += gen.completion_tokens
    choices = []
    for i, (text, finish) in enumerate(texts):
        choices.append(
            litellm.Choices(index=i, finish_reason=finish, message=litellm.Message(role="assistant", content=text))
        )
    model_response.choices = choices
    model_response.usage = _usage(litellm, prompt_tokens, completion_tokens)
    return model_response


def _complete_cached(target: str, messages: list, optional_params: dict, model_response: Any) -> Any:
    from selfalign.models.client import client_for

    litellm = import_litellm()
    client = client_for(target)
    before = (client.stats.prompt_tokens, client.stats.completion_tokens)
    text = client.complete(
        [dict(m) for m in messages],
        max_tokens=int(optional_params.get("max_tokens") or optional_params.get("max_completion_tokens") or 512),
        temperature=float(optional_params.get("temperature") or 0.0),
    )
    model_response.model = f"{EMBEDDED_PROVIDER}/{CACHED_PREFIX}{target}"
    model_response.choices[0].message.content = text
    model_response.choices[0].finish_reason = "stop"
    model_response.usage = _usage(
        litellm, client.stats.prompt_tokens - before[0], client.stats.completion_tokens - before[1]
    )
    return model_response
