"""The model layer: every model call in selfalign goes through LiteLLM, with one disk cache.

``ModelClient(model).score(prompt)`` gives an :class:`AnswerDistribution` over a probe's options from the
embedded Gemma 3 270M (exact option scoring), a hosted API or an OpenAI-compatible server (top log-probabilities
of the option labels, or sampling where a backend has none), a base model behind a text-completions server
(method ``completion``: options scored as continuations, many probes per request) or any model asked to state
the shares itself (method ``verbalized``). Heavy parts (LiteLLM, llama.cpp, DSPy) are imported on first use:
importing this package is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from selfalign.models.types import AnswerDistribution, RenderedPrompt, ScoringMethod

if TYPE_CHECKING:
    from selfalign.models.cache import CacheInfo, ResultCache, open_cache
    from selfalign.models.calls import ClientStats
    from selfalign.models.client import ModelClient, shared_client
    from selfalign.models.config import ModelConfigError, ModelInfo, ModelSpec, list_models, resolve_model
    from selfalign.models.dspy_bridge import default_lm, dspy_lm, route_client

_LAZY = {
    "ModelClient": "selfalign.models.client",
    "shared_client": "selfalign.models.client",
    "ClientStats": "selfalign.models.calls",
    "ResultCache": "selfalign.models.cache",
    "CacheInfo": "selfalign.models.cache",
    "open_cache": "selfalign.models.cache",
    "ModelSpec": "selfalign.models.config",
    "ModelInfo": "selfalign.models.config",
    "ModelConfigError": "selfalign.models.config",
    "resolve_model": "selfalign.models.config",
    "list_models": "selfalign.models.config",
    "dspy_lm": "selfalign.models.dspy_bridge",
    "default_lm": "selfalign.models.dspy_bridge",
    "route_client": "selfalign.models.dspy_bridge",
}

__all__ = [
    "AnswerDistribution",
    "CacheInfo",
    "ClientStats",
    "ModelClient",
    "ModelConfigError",
    "ModelInfo",
    "ModelSpec",
    "RenderedPrompt",
    "ResultCache",
    "ScoringMethod",
    "default_lm",
    "dspy_lm",
    "list_models",
    "open_cache",
    "resolve_model",
    "route_client",
    "shared_client",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'selfalign.models' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
