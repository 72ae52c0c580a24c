"""DSPy language models whose calls keep selfalign's cache, retries, timeouts and accounting.

``dspy_lm(model)`` returns ``dspy.LM("selfalign/cached/<route>", engine="litellm", cache=False)``: DSPy's own
cache is off; its call goes through LiteLLM to the ``selfalign`` provider, which hands it to the route's
:class:`~selfalign.models.client.ModelClient` (see :func:`~selfalign.models.client.shared_client`) -- whose
own call is again a LiteLLM call (the embedded model, a hosted API, an alias with several deployments). The
survey adapter sends scoring requests over this path; other DSPy modules send ordinary generations.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from selfalign import DEFAULT_MODEL
from selfalign.errors import SelfAlignError
from selfalign.models.client import ModelClient, route_of, shared_client
from selfalign.models.litellm_env import import_litellm
from selfalign.models.routes import lookup
from selfalign.models.wire import ROUTE_PREFIX

_default: list[Any] = []
_default_lock = threading.Lock()


def dspy_lm(
    model: str = DEFAULT_MODEL,
    *,
    api_base: str | None = None,
    cache_dir: str | Path | None = None,
    config: str | Path | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    method: str | None = None,
    use_cache: bool = True,
    retry_invalid: bool | None = None,
    batch_size: int | None = None,
    completion_logprobs: str | None = None,
    **kwargs: Any,
) -> Any:
    """A ``dspy.LM`` for ``model`` (validated first) whose calls go through LiteLLM and the selfalign cache.

    ``api_base`` addresses an OpenAI-compatible server; ``cache_dir`` selects the result cache (default:
    ``$SELFALIGN_CACHE_DIR`` or ``~/.cache/selfalign``); ``timeout_s``, ``max_retries``, ``method``
    (``logprob``, ``completion``, ``sample``, ``greedy``, ``verbalized``), ``retry_invalid``, ``batch_size`` and
    ``completion_logprobs`` configure its :class:`ModelClient` (unset: the alias's values, then the client's
    defaults); ``use_cache=False`` bypasses the cache. Other keyword arguments go to
    ``dspy.LM`` (e.g. ``temperature``, ``max_tokens`` for generations). DSPy's own cache and retries are off:
    the client does both.
    """
    settings = {
        "timeout_s": timeout_s,
        "max_retries": max_retries,
        "method": method,
        "retry_invalid": retry_invalid,
        "batch_size": batch_size,
        "completion_logprobs": completion_logprobs,
    }
    settings = {k: v for k, v in settings.items() if v is not None}
    client = shared_client(
        model, api_base=api_base, cache_dir=cache_dir, config=config, use_cache=use_cache, **settings
    )
    import_litellm()
    import dspy

    kwargs.setdefault("num_retries", 0)
    params: dict[str, Any] = {"cache": False, **kwargs}
    return dspy.LM(f"{ROUTE_PREFIX}{route_of(client)}", engine="litellm", **params)


def default_lm() -> Any:
    """The process's DSPy LM for the embedded model (what programs use when no LM is configured)."""
    with _default_lock:
        if not _default:
            _default.append(dspy_lm(DEFAULT_MODEL))
        return _default[0]


def route_client(lm: Any) -> ModelClient | None:
    """The :class:`ModelClient` behind a selfalign DSPy LM; None for any other LM."""
    model = getattr(lm, "model", None)
    if not isinstance(model, str) or not model.startswith(ROUTE_PREFIX):
        return None
    client = lookup(model[len(ROUTE_PREFIX) :])
    if not isinstance(client, ModelClient):  # pragma: no cover - only ModelClients are registered
        raise SelfAlignError(f"the route of {model} is not a selfalign model client")
    return client
