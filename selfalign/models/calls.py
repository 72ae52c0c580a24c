"""One LiteLLM request with timeouts and retries, and the event loop every model call runs on.

:class:`Caller` sends a request through ``litellm.acompletion`` (or ``litellm.Router`` for an alias with several
deployments), with a per-call timeout, retried with exponential backoff and jitter on rate limits, timeouts,
server and connection errors (``Retry-After`` honoured). A call that still fails raises :class:`CallFailed`
with one redacted line. :func:`run_sync` runs coroutines on one background event loop per process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from selfalign.models.config import ModelSpec, provider_of
from selfalign.models.litellm_env import import_litellm
from selfalign.models.redact import one_line, redact, register_secret

T = TypeVar("T")


class CallFailed(Exception):
    """A call that failed for good; the message is one redacted line."""


@dataclass
class ClientStats:
    """Running totals of a client: distributions asked for (``requests``, cached or not), calls sent, cache
    hits, failures, retries, tokens, cost and latency.

    ``cost_usd`` sums LiteLLM's cost where it knows the model's price (0 for the embedded model); it stays
    None while no call had a known cost.
    """

    requests: int = 0
    calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: Any) -> None:
        """Add to the counters (thread-safe); a ``cost_usd`` of None leaves the cost as it is."""
        with self._lock:
            for name, value in deltas.items():
                if name == "cost_usd":
                    if value is not None:
                        self.cost_usd = (self.cost_usd or 0.0) + value
                else:
                    setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}

    def take(self) -> dict[str, Any]:
        """The counters as a plain dict, zeroing them (atomically)."""
        with self._lock:
            counters = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
            for f in dataclasses.fields(self):
                if not f.name.startswith("_"):
                    setattr(self, f.name, f.default)
            return counters


# --- the background event loop ----------------------------------------------------------------------
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_loop_lock = threading.Lock()
litellm_called_in: int | None = None
"""The process that made a LiteLLM call (its lazy imports are done); read by the worker pool."""


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(_quiet_exit_handler)
            thread = threading.Thread(target=loop.run_forever, name="selfalign-models", daemon=True)
            thread.start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def _quiet_exit_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Drop asyncio's note about LiteLLM's background logging task left pending when the process exits."""
    task = context.get("task")
    if context.get("message", "").startswith("Task was destroyed") and "LoggingWorker" in repr(task):
        return
    loop.default_exception_handler(context)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the models' background event loop and wait for its result."""
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError("run_sync called from the models event loop; await the coroutine instead")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:  # Ctrl-C or an error in the caller's thread: stop the queued calls too
        future.cancel()
        raise


# --- retries ----------------------------------------------------------------------------------------
def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


_OPENAI_TEXT_PROVIDERS = ("openai", "text-completion-openai", "hosted_vllm")
_TRANSIENT = ("RateLimitError", "Timeout", "APIConnectionError", "InternalServerError", "ServiceUnavailableError",
              "BadGatewayError")  # fmt: skip


def is_retryable(exc: BaseException, litellm: Any) -> bool:
    """Whether a failed call is worth retrying: timeouts, connection errors, 408/409/425/429 and 5xx."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError):
        return True
    transient = tuple(c for c in (getattr(litellm, n, None) for n in _TRANSIENT) if isinstance(c, type))
    if transient and isinstance(exc, transient):
        return True
    status = _status_of(exc)
    return status is not None and (status in (408, 409, 425, 429) or status >= 500)


def retry_after(exc: BaseException) -> float | None:
    """The server's ``Retry-After`` in seconds (0-60), when the failed call's response carries one."""
    for attr in ("litellm_response_headers", "headers"):
        headers = getattr(exc, attr, None)
        if headers:
            break
    else:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
        seconds = float(value)
    except (AttributeError, TypeError, ValueError):
        return None
    return seconds if 0 <= seconds <= 60 else None


def is_local(api_base: str | None) -> bool:
    """Whether an API base URL points at this machine (127.0.0.0/8, ::1, localhost)."""
    if not api_base:
        return False
    from urllib.parse import urlparse

    host = (urlparse(api_base).hostname or "").lower()
    return host == "localhost" or host == "::1" or host.startswith("127.")


def placeholder_key(model: str, api_base: str | None) -> str | None:
    """A dummy key for OpenAI-compatible local servers that need none (the OpenAI client insists on one)."""
    if api_base and model.startswith(("openai/", "text-completion-openai/")) and not os.environ.get("OPENAI_API_KEY"):
        return "no-key"
    return None


def usage_tokens(response: Any) -> tuple[int, int]:
    """``(prompt_tokens, completion_tokens)`` of a LiteLLM response's usage (0 where it reports none)."""
    usage = getattr(response, "usage", None)
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


def response_cost(response: Any, embedded: bool) -> float | None:
    """LiteLLM's cost of a response (it prices known models when the call returns); None when unknown."""
    if embedded:
        return 0.0
    cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
    try:
        return float(cost) if cost is not None else None
    except (TypeError, ValueError):
        return None


class Caller:
    """Sends LiteLLM requests for one model: keys read at call time, timeouts, retries, statistics."""

    def __init__(
        self,
        spec: ModelSpec,
        params: dict[str, Any],
        stats: ClientStats,
        *,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
    ) -> None:
        self.spec = spec
        self.params = params
        self.stats = stats
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._router: Any = None
        self._text_clients: dict[tuple[int, str | None], Any] = {}

    def reset(self) -> None:
        """Forget HTTP clients (a forked worker must not share its parent's)."""
        self._router = None
        self._text_clients = {}

    def _text_client(self, api_key: str | None) -> Any:
        """One OpenAI client per event loop and key for text completions at an ``api_base`` (LiteLLM would build
        a new client, and a new HTTP session, for every text-completion call)."""
        if not self.spec.api_base or provider_of(self.spec.model) not in _OPENAI_TEXT_PROVIDERS:
            return None
        slot = (id(asyncio.get_running_loop()), api_key)
        client = self._text_clients.get(slot)
        if client is None:
            import openai

            client = openai.AsyncOpenAI(
                api_key=api_key or "no-key", base_url=self.spec.api_base, max_retries=0, timeout=self.timeout_s
            )
            self._text_clients[slot] = client
        return client

    def _api_key(self) -> str | None:
        env = self.spec.api_key_env
        if not env:
            return placeholder_key(self.spec.model, self.spec.api_base)
        value = os.environ.get(env)
        if not value:
            raise CallFailed(f"environment variable {env} (the API key of {self.spec.name}) is not set")
        register_secret(value)
        return value

    def _get_router(self, litellm: Any) -> Any:
        if self._router is None:
            model_list = []
            for d in self.spec.deployments:
                params: dict[str, Any] = {"model": d.model, **d.params}
                if d.api_base:
                    params["api_base"] = d.api_base
                if d.api_key_env:
                    key = os.environ.get(d.api_key_env)
                    if not key:
                        raise CallFailed(
                            f"environment variable {d.api_key_env} (an API key of {self.spec.name}) is not set"
                        )
                    register_secret(key)
                    params["api_key"] = key
                elif placeholder_key(d.model, d.api_base):
                    params["api_key"] = placeholder_key(d.model, d.api_base)
                model_list.append({"model_name": self.spec.name, "litellm_params": params})
            self._router = litellm.Router(
                model_list=model_list, num_retries=0, timeout=self.timeout_s, routing_strategy="simple-shuffle"
            )
        return self._router

    def _root_and_key(self) -> tuple[str, str | None]:
        """The server's root URL (``api_base`` without ``/v1``) and key, for its own (non-OpenAI) endpoints."""
        if self.spec.deployments:
            first = self.spec.deployments[0]
            base, env = first.api_base, first.api_key_env
            key = os.environ.get(env) if env else None
        else:
            base = self.spec.api_base
            key = self._api_key()
        if not base:
            raise CallFailed(f"{self.spec.name}: the server's tokenizer needs an api_base (llama-cpp-python's server)")
        root = base.rstrip("/")
        return (root[:-3] if root.endswith("/v1") else root), key

    async def tokenize(self, text: str) -> list[int]:
        """The server's tokens of ``text``, BOS included (llama-cpp-python's ``POST /extras/tokenize``).

        Not a model call: it is not counted in the statistics and not retried but once on a connection error.
        """
        import httpx

        root, key = self._root_and_key()
        slot = (id(asyncio.get_running_loop()), "httpx")
        client = self._text_clients.get(slot)
        if client is None:
            client = self._text_clients[slot] = httpx.AsyncClient(timeout=self.timeout_s)
        headers = {"Authorization": f"Bearer {key}"} if key and key != "no-key" else {}
        for attempt in range(2):
            try:
                response = await client.post(f"{root}/extras/tokenize", json={"input": text}, headers=headers)
                break
            except httpx.TransportError as exc:
                if attempt:
                    raise CallFailed(one_line(exc, [key])) from None
                await asyncio.sleep(self.backoff_s)
        if response.status_code != 200:
            body = redact(response.text.strip().splitlines()[0] if response.text.strip() else "", [key])[:200]
            raise CallFailed(f"POST {root}/extras/tokenize answered {response.status_code} {body}".strip())
        try:
            tokens = response.json()["tokens"]
            return [int(t) for t in tokens]
        except (ValueError, KeyError, TypeError):
            raise CallFailed(f"POST {root}/extras/tokenize gave no list of tokens") from None

    async def call(self, kwargs: dict[str, Any], *, text: bool = False) -> tuple[Any, float]:
        """One request with retries; returns (response, latency of the successful attempt).

        ``text`` sends it to the text-completion endpoint (``litellm.atext_completion``) instead of chat.
        """
        global litellm_called_in
        litellm = import_litellm()
        embedded = self.spec.is_embedded
        secrets: list[str | None] = []
        request = {**self.params, **kwargs, "timeout": self.timeout_s}
        if not embedded:
            request |= {"max_retries": 0, "num_retries": 0}
            if is_local(self.spec.api_base) and "input_cost_per_token" not in request:
                # a server on this machine bills nothing: its calls cost 0, not an unknown price
                request |= {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0}
        attempt = 0
        while True:
            start = time.perf_counter()
            try:
                if self.spec.uses_router:
                    router = self._get_router(litellm)
                    fn = router.atext_completion if text else router.acompletion
                    call = fn(model=self.spec.name, **request)
                else:
                    api_key = self._api_key()
                    secrets = [api_key]
                    extra = {"api_base": self.spec.api_base} if self.spec.api_base else {}
                    if api_key:
                        extra["api_key"] = api_key
                    if text:
                        client = self._text_client(api_key)
                        if client is not None:
                            extra["client"] = client
                    fn = litellm.atext_completion if text else litellm.acompletion
                    call = fn(model=self.spec.model, **request, **extra)
                try:
                    response = await (call if embedded else asyncio.wait_for(call, self.timeout_s + 5.0))
                finally:
                    litellm_called_in = os.getpid()
            except (CallFailed, asyncio.CancelledError):
                raise
            except Exception as exc:
                latency = time.perf_counter() - start
                self.stats.add(calls=1, latency_s=latency)
                if attempt >= self.max_retries or not is_retryable(exc, litellm):
                    raise CallFailed(one_line(exc, secrets)) from None
                delay = retry_after(exc)
                if delay is None:
                    delay = min(30.0, self.backoff_s * (2**attempt)) * random.uniform(0.5, 1.5)
                attempt += 1
                self.stats.add(retries=1)
                await asyncio.sleep(delay)
                continue
            latency = time.perf_counter() - start
            prompt_tokens, completion_tokens = usage_tokens(response)
            self.stats.add(
                calls=1,
                latency_s=latency,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=response_cost(response, embedded),
            )
            return response, latency
