"""The route registry: which :class:`~selfalign.models.client.ModelClient` answers ``selfalign/cached/<route>``.

:func:`selfalign.models.dspy_lm` registers the client of the LM it builds; the LiteLLM provider looks it up
when DSPy's call arrives. A route that was never registered in this process (a hand-written model string)
gets a default client from the factory that :mod:`selfalign.models.client` installs when it is imported.
The registry holds objects only; it imports nothing of the model layer, so the provider can use it without
depending on the client.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfalign.errors import ModelError

_routes: dict[str, Any] = {}
_lock = threading.Lock()
_factory: list[Callable[[str], Any]] = []


def route_name(model: str, **settings: Any) -> str:
    """``model`` for default settings, else ``model#<hash of the settings>`` (no key is ever part of it)."""
    shown = {k: (str(Path(v).expanduser()) if k == "cache_dir" else v) for k, v in settings.items() if v is not None}
    if not shown:
        return model
    digest = hashlib.sha256(repr(sorted(shown.items())).encode()).hexdigest()[:8]
    return f"{model}#{digest}"


def register(route: str, make: Callable[[], Any]) -> Any:
    """The client of ``route``: the registered one, else ``make()`` registered now."""
    with _lock:
        client = _routes.get(route)
        if client is None:
            client = _routes[route] = make()
        return client


def set_default_factory(factory: Callable[[str], Any]) -> None:
    """Install how a route that was never registered gets its client (``factory(model)``)."""
    _factory[:] = [factory]


def lookup(route: str) -> Any:
    """The client registered for ``route``; a bare model string gets a default client on first use."""
    with _lock:
        client = _routes.get(route)
    if client is not None:
        return client
    if "#" in route or not _factory:
        raise ModelError(
            f"no selfalign model route {route!r} in this process; build the LM with selfalign.models.dspy_lm(model)"
        )
    return register(route, lambda: _factory[0](route))


def registered() -> dict[str, Any]:
    """A snapshot of the registered routes and their clients."""
    with _lock:
        return dict(_routes)
