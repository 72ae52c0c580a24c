"""DSPy language models that route through LiteLLM and the selfalign cache.

``dspy_lm(model)`` returns ``dspy.LM("selfalign/cached/<model>", engine="litellm", cache=False)``: DSPy's
own cache is off, its call goes through LiteLLM to the ``selfalign`` provider, which answers with
:meth:`ModelClient.complete` of ``<model>`` -- again a LiteLLM call (the embedded model, a hosted API, an
alias with several deployments) -- so DSPy programs share the one disk cache, the retries and the accounting
of every other model call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfalign import DEFAULT_MODEL
from selfalign.models.config import EMBEDDED_PROVIDER, resolve_model
from selfalign.models.provider import CACHED_PREFIX, import_litellm


def dspy_lm(
    model: str = DEFAULT_MODEL, *, api_base: str | None = None, cache_dir: str | Path | None = None, **kwargs: Any
) -> Any:
    """A ``dspy.LM`` for ``model`` (validated first) whose calls go through LiteLLM and the selfalign cache.

    ``api_base`` addresses an OpenAI-compatible server; ``cache_dir`` selects the result cache (default:
    ``$SELFALIGN_CACHE_DIR`` or ``~/.cache/selfalign``). Other keyword arguments go to ``dspy.LM`` (e.g.
    ``temperature``, ``max_tokens``). DSPy's own cache is disabled and its retries left to the ModelClient.
    """
    from selfalign.models.client import register_route

    resolve_model(model, api_base=api_base)
    import_litellm()
    import dspy

    route = register_route(model, api_base=api_base, cache_dir=cache_dir)
    kwargs.setdefault("num_retries", 0)
    params: dict[str, Any] = {"cache": False, **kwargs}
    name = f"{EMBEDDED_PROVIDER}/{CACHED_PREFIX}{route}"
    try:
        return dspy.LM(name, engine="litellm", **params)
    except TypeError:  # a DSPy without the engine argument routes through LiteLLM already
        return dspy.LM(name, **params)
