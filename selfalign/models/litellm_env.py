"""The one place LiteLLM is imported: offline, quiet, its own cache off, selfalign's provider registered.

Importing LiteLLM normally downloads a model price list (there may be no internet) and takes seconds, so it
happens on first use only (``selfalign --help`` stays fast).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from selfalign.models.wire import EMBEDDED_PROVIDER

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
    from selfalign.models.provider import provider_class

    entry = {"provider": EMBEDDED_PROVIDER, "custom_handler": provider_class()()}
    current = [p for p in (litellm.custom_provider_map or []) if p.get("provider") != EMBEDDED_PROVIDER]
    litellm.custom_provider_map = [*current, entry]
    # custom_provider_map is read when litellm sets up providers; refresh the registry when possible
    setup = getattr(getattr(litellm, "utils", None), "custom_llm_setup", None)
    if callable(setup):
        setup()
