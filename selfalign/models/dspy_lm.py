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


def dspy_lm(model: str = DEFAULT_MODEL, *, cache_dir: str | Path | None = None, **kwargs: Any) -> Any:
    """A ``dspy.LM`` for ``model`` (validated first) whose calls go through LiteLLM and the selfalign cache.

    ``cache_dir`` selects the result cache (default: ``$SELFALIGN_CACHE_DIR`` or ``~/.cache/selfalign``);
    other keyword arguments go to ``dspy.LM`` (e.g. ``temperature``, ``max_tokens``).
    """
    resolve_model(model)
    import_litellm()
    import dspy

    if cache_dir is not None:
        from selfalign.models.client import client_for

        client_for(model, cache_dir)  # registers the client the provider will use for this model
    kwargs.setdefault("num_retries", 0)  # retries happen in ModelClient
    params: dict[str, Any] = {"cache": False, **kwargs}
    try:
        lm = dspy.LM(f"{EMBEDDED_PROVIDER}/{CACHED_PREFIX}{model}", engine="litellm", **params)
    except TypeError:  # a DSPy without the engine argument routes through LiteLLM already
        lm = dspy.LM(f"{EMBEDDED_PROVIDER}/{CACHED_PREFIX}{model}", **params)
    return lm
