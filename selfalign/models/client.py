"""ModelClient: answer distributions and generations from any model, through LiteLLM, with one disk cache.

Every call goes through ``litellm.acompletion`` (or ``litellm.Router`` for an alias with several
deployments); the embedded model is the ``selfalign`` custom provider (see :mod:`selfalign.models.provider`).
Calls run on one background event loop per process, at most ``max_concurrency`` in flight (the embedded model:
one), each with a timeout and retried with exponential backoff and jitter on rate limits, timeouts, server and
connection errors (``Retry-After`` honoured). A call that still fails gives an :class:`AnswerDistribution` with
``error`` set (one line, keys redacted), never cached and never counted as an answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from selfalign import DEFAULT_MODEL
from selfalign.errors import ModelError
from selfalign.models import scoring
from selfalign.models.cache import ResultCache, cache_key, dist_from_json, dist_to_json, open_cache
from selfalign.models.config import ModelSpec, resolve_model
from selfalign.models.provider import SCORE_PARAM, SCORES_KEY, import_litellm
from selfalign.models.types import AnswerDistribution, RenderedPrompt, ScoringMethod
from selfalign.models.workers import WorkerPool, can_fork

T = TypeVar("T")

EMBEDDED_SCORING = "mean-token-logprob/softmax/v1"  # bump when the embedded scoring changes
ANSWER_MAX_TOKENS = 32  # free-text answers (sample, greedy) are short: a label or an option text
WORKERS_MIN_PROBES = 200  # hosted batches at least this large are spread over worker processes
CALLS_PER_WORKER = 4  # default: one worker process per this many calls in flight ...
MAX_WORKERS = 8  # ... and at most this many
CACHE_WRITE_BLOCK = 32  # results of worker processes are cached in transactions of this many entries
_SECRET_PARAM = re.compile(r"key|token|secret|password|auth|header|credential", re.IGNORECASE)
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
_SECRET_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9_\-\.=]+"),
    re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
)


@dataclass
class ClientStats:
    """Running totals of a client: requests sent, cache hits, failures, retries, tokens, cost and latency.

    ``cost_usd`` sums LiteLLM's cost where it knows the model's price (0 for the embedded model); it stays
    None while no call had a known cost.
    """

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


class _CallFailed(Exception):
    """A call that failed for good; the message is one redacted line."""


_litellm_called_in: int | None = None  # the process that made a LiteLLM call (its lazy imports are done)


# --- the background event loop ----------------------------------------------------------------------
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_loop_lock = threading.Lock()


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


# --- errors -------------------------------------------------------------------------------------------
def _secret_values(extra: Sequence[str | None] = ()) -> list[str]:
    values = [v for v in extra if v and len(v) >= 6]
    values += [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and v and len(v) >= 8]
    return sorted(set(values), key=len, reverse=True)


def redact(text: str, secrets: Sequence[str | None] = ()) -> str:
    """``text`` with API keys removed: known secret values, ``sk-...`` keys, bearer tokens, ``api_key=...``."""
    for value in _secret_values(secrets):
        text = text.replace(value, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "***", text) if pattern.groups else pattern.sub("***", text)
    return text


def _one_line(exc: BaseException, secrets: Sequence[str | None] = ()) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not message:
        message = "no answer within the timeout"
    text = f"{name}: {message}" if message and not message.startswith(name) else (message or name)
    return redact(text, secrets)[:300]


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


def _is_retryable(exc: BaseException, litellm: Any) -> bool:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return True
    transient = tuple(
        cls
        for cls in (
            getattr(litellm, name, None)
            for name in (
                "RateLimitError",
                "Timeout",
                "APIConnectionError",
                "InternalServerError",
                "ServiceUnavailableError",
                "BadGatewayError",
            )
        )
        if isinstance(cls, type)
    )
    if transient and isinstance(exc, transient):
        return True
    status = _status_of(exc)
    return status is not None and (status in (408, 409, 425, 429) or status >= 500)


def _retry_after(exc: BaseException) -> float | None:
    for attr in ("litellm_response_headers", "headers"):
        headers = getattr(exc, attr, None)
        if headers:
            break
    else:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except AttributeError:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 <= seconds <= 60 else None


def _field(item: Any, name: str) -> Any:
    """``item[name]`` for a dict, ``item.name`` for an object (LiteLLM returns either), else None."""
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _first_token_top_logprobs(logprobs: Any) -> list[tuple[str, float]]:
    """(token, logprob) pairs of the first answer token's ``top_logprobs``; empty when the reply has none."""
    content = _field(logprobs, "content") if logprobs is not None else None
    if not content:
        return []
    pairs: list[tuple[str, float]] = []
    for item in _field(content[0], "top_logprobs") or []:
        token, logprob = _field(item, "token"), _field(item, "logprob")
        if token is not None and logprob is not None:
            pairs.append((str(token), float(logprob)))
    return pairs


def _is_local(api_base: str | None) -> bool:
    """Whether an API base URL points at this machine (127.0.0.0/8, ::1, localhost)."""
    if not api_base:
        return False
    from urllib.parse import urlparse

    host = (urlparse(api_base).hostname or "").lower()
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _placeholder_key(model: str, api_base: str | None) -> str | None:
    """A dummy key for OpenAI-compatible local servers that need none (the OpenAI client insists on one)."""
    if api_base and model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
        return "no-key"
    return None


# --- the client -----------------------------------------------------------------------------------------
class ModelClient:
    """Answer distributions (:meth:`score`) and generations (:meth:`complete`) from one model.

    ``model`` is a LiteLLM model string, a configured alias or the embedded ``selfalign/gemma-3-270m``.
    ``method`` forces a scoring method; by default it is ``logprob`` when the model gives log-probabilities and
    ``sample`` otherwise (and a model that returns no log-probabilities falls back to ``sample``).
    ``cache``: None opens the default cache, False disables caching, or a :class:`ResultCache` (or a
    directory). ``workers``: processes that share a large hosted batch (LiteLLM costs a few ms of CPU per
    call, and on one event loop those milliseconds queue behind each other); default: one per 4 calls in
    flight (at most 8) for batches of 200 or more on platforms that fork, 1 otherwise. The workers are forked
    once, kept for later batches and stopped by :meth:`close` (or when the client is garbage-collected).
    Extra keyword arguments are passed to every LiteLLM call (never put keys there: use the provider's
    environment variable or a config alias with ``api_key_env``).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        method: ScoringMethod | str | None = None,
        api_base: str | None = None,
        cache: ResultCache | str | Path | bool | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        n_samples: int = 20,
        temperature: float = 1.0,
        top_logprobs: int = 20,
        config: str | Path | None = None,
        backoff_s: float = 0.5,
        workers: int | None = None,
        **litellm_params: Any,
    ) -> None:
        self.spec: ModelSpec = resolve_model(model, config=config, api_base=api_base)
        self.model = model
        self.is_text_model = self.spec.is_embedded
        self.supports_logprobs = self.spec.supports_logprobs
        if method is not None:
            try:
                method = ScoringMethod(str(method))
            except ValueError:
                from selfalign.errors import UnknownChoiceError

                raise UnknownChoiceError("scoring method", str(method), [m.value for m in ScoringMethod]) from None
        self.method: ScoringMethod | None = method
        if cache is None or cache is True:
            self.cache: ResultCache | None = open_cache()
        elif cache is False:
            self.cache = None
        elif isinstance(cache, ResultCache):
            self.cache = cache
        else:
            self.cache = open_cache(cache)
        self.max_concurrency = 1 if self.is_text_model else max(1, int(max_concurrency))
        self.timeout_s = float(timeout_s)
        self.max_retries = 0 if self.is_text_model else max(0, int(max_retries))
        self.n_samples = max(1, int(n_samples))
        self.temperature = float(temperature)
        self.top_logprobs = max(1, min(20, int(top_logprobs)))
        self.backoff_s = float(backoff_s)
        self.workers = None if workers is None else max(1, int(workers))
        for name in litellm_params:
            if name.lower() in ("api_key", "key") or name.lower().endswith("_api_key"):
                raise ModelError(
                    "pass API keys through the environment (or a config alias with api_key_env), "
                    "not as arguments: they must never reach caches or logs"
                )
        self.litellm_params = dict(self.spec.params) | litellm_params
        self.stats = ClientStats()
        self._litellm: Any = None
        self._router: Any = None
        self._sem: dict[int, asyncio.Semaphore] = {}
        self._pool: WorkerPool | None = None
        self._pool_lock = threading.Lock()  # one batch at a time on the pool's pipes

    def __repr__(self) -> str:
        return f"ModelClient({self.model!r}, method={self.method}, supports_logprobs={self.supports_logprobs})"

    # --- public API ---------------------------------------------------------------------------------
    def method_for(self, prompt: RenderedPrompt | None = None) -> ScoringMethod:
        """The scoring method used for ``prompt``: the forced one, else by capability."""
        if self.method is not None:
            return self.method
        return ScoringMethod.LOGPROB if self.supports_logprobs else ScoringMethod.SAMPLE

    def score(self, prompt: RenderedPrompt) -> AnswerDistribution:
        """The model's distribution over the options of one probe (never raises for model failures)."""
        return self.score_many([prompt])[0]

    async def ascore(self, prompt: RenderedPrompt) -> AnswerDistribution:
        """Async :meth:`score`, for callers that run their own event loop."""
        return await self._score_one(prompt, self.method_for(prompt))

    def score_many(
        self,
        prompts: Sequence[RenderedPrompt],
        on_result: Callable[[int, AnswerDistribution], None] | None = None,
    ) -> list[AnswerDistribution]:
        """Distributions for many probes, in input order, with at most ``max_concurrency`` calls in flight.

        Cached results are returned first without touching the event loop; ``on_result(index, dist)`` is
        called as each result is ready (from the calling thread for cache hits and worker-pool results, else
        from the models' event loop thread), e.g. for progress bars and incremental saving.
        """
        results: list[AnswerDistribution | None] = [None] * len(prompts)
        todo: list[tuple[int, RenderedPrompt, ScoringMethod, str | None]] = []
        for i, prompt in enumerate(prompts):
            method = self.method_for(prompt)
            key = self._score_key(prompt, method) if self.cache is not None else None
            hit = self._cached_dist(key)
            if hit is not None:
                results[i] = hit
                if on_result is not None:
                    on_result(i, hit)
            else:
                todo.append((i, prompt, method, key))
        if todo:
            workers = self._workers_for(len(todo))
            if workers > 1:
                self._score_in_pool(todo, results, on_result, workers)
            else:
                run_sync(self._score_todo(todo, results, on_result))
        if self.cache is not None:
            self.cache.save_run_stats()
        return [r for r in results if r is not None]

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0) -> str:
        """Generate a reply to chat ``messages`` (the embedded model sees them as a plain transcript).

        Cached on model, messages and decoding parameters; raises :class:`~selfalign.errors.ModelError` when
        the call fails after retries.
        """
        return run_sync(self.acomplete(messages, max_tokens=max_tokens, temperature=temperature))

    async def acomplete(
        self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0
    ) -> str:
        """Async :meth:`complete`."""
        messages = [{"role": str(m.get("role", "user")), "content": str(m.get("content", ""))} for m in messages]
        key = None
        if self.cache is not None:
            key = cache_key(
                {
                    "kind": "complete",
                    "model": self.spec.identity(),
                    "messages": messages,
                    "params": {"max_tokens": max_tokens, "temperature": temperature, **self._key_params()},
                }
            )
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.add(cache_hits=1)
                return str(hit["text"])
        kwargs = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        try:
            response, _latency = await self._call(kwargs)
        except _CallFailed as exc:
            raise ModelError(f"{self.model}: {exc}") from None
        text = response.choices[0].message.content or ""
        if key is not None and self.cache is not None:
            self.cache.set(key, {"text": text, "model": self.model})
        return text

    # --- keys -----------------------------------------------------------------------------------------
    def _key_params(self) -> dict[str, Any]:
        return {k: v for k, v in sorted(self.litellm_params.items()) if not _SECRET_PARAM.search(k)}

    def _score_key(self, prompt: RenderedPrompt, method: ScoringMethod) -> str:
        if self.is_text_model:
            shown: dict[str, Any] = {"text": prompt.text, "continuations": list(prompt.continuations)}
        else:
            shown = {"messages": [dict(m) for m in prompt.messages], "labels": list(prompt.labels)}
        shown["options"] = list(prompt.options)
        if method is ScoringMethod.LOGPROB:
            params: dict[str, Any] = (
                {"scoring": EMBEDDED_SCORING}
                if self.is_text_model
                else {"top_logprobs": self.top_logprobs, "max_tokens": 1, "temperature": 0.0}
            )
        elif method is ScoringMethod.SAMPLE:
            params = {"n": self.n_samples, "temperature": self.temperature, "max_tokens": ANSWER_MAX_TOKENS}
        else:
            params = {"temperature": 0.0, "max_tokens": ANSWER_MAX_TOKENS}
        return cache_key(
            {
                "kind": "score",
                "model": self.spec.identity(),
                "method": str(method),
                "prompt": shown,
                "params": params | self._key_params(),
            }
        )

    def _cached_dist(self, key: str | None) -> AnswerDistribution | None:
        if key is None or self.cache is None:
            return None
        hit = self.cache.get(key)
        if hit is None:
            return None
        self.stats.add(cache_hits=1)
        return dist_from_json(hit)

    def close(self) -> None:
        """Stop this client's worker processes, if any (a later large batch starts new ones)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _workers_for(self, pending: int) -> int:
        """Worker processes for a batch of ``pending`` uncached probes (1: score here, on the event loop)."""
        if self.is_text_model or self.workers == 1 or self.max_concurrency < 2 or pending < 2 or not can_fork():
            return 1
        if self._pool is not None and self._pool.alive:
            return self._pool.size
        if self.workers is not None:
            return max(1, min(self.workers, pending, self.max_concurrency))
        if pending < WORKERS_MIN_PROBES:
            return 1
        return max(1, min(self.max_concurrency // CALLS_PER_WORKER, MAX_WORKERS))

    def _score_in_pool(
        self,
        todo: Sequence[tuple[int, RenderedPrompt, ScoringMethod, str | None]],
        results: list[AnswerDistribution | None],
        on_result: Callable[[int, AnswerDistribution], None] | None,
        workers: int,
    ) -> None:
        """Score ``todo`` on this client's worker processes (started, and kept, on first use).

        Batches from several threads take turns: the pool's pipes carry one batch at a time.
        """
        keys = {i: (prompt, key) for i, prompt, _method, key in todo}
        writes: list[tuple[str, dict[str, Any]]] = []

        def received(i: int, dist: AnswerDistribution, fallback: ScoringMethod | None) -> None:
            prompt, key = keys[i]
            self._store(prompt, key, dist, fallback, writes)
            if len(writes) >= CACHE_WRITE_BLOCK:
                self._flush(writes)
            results[i] = dist
            if on_result is not None:
                on_result(i, dist)

        def counted(counters: dict[str, Any]) -> None:
            self.stats.add(**{k: v for k, v in counters.items() if k not in ("failures", "cache_hits")})

        with self._pool_lock:
            if self._pool is None or not self._pool.alive:
                self.close()
                if _litellm_called_in != os.getpid():
                    # one call here first: LiteLLM's lazy imports then happen once, and the forked workers start warm
                    first, todo = todo[:1], todo[1:]
                    run_sync(self._score_todo(first, results, on_result))
                self._pool = WorkerPool(self, workers)
                weakref.finalize(self, self._pool.close, kill=True)
            try:
                self._pool.score([(i, prompt, method) for i, prompt, method, _key in todo], received, counted)
            finally:
                self._flush(writes)
            if not self._pool.alive:
                self.close()

    def _flush(self, writes: list[tuple[str, dict[str, Any]]]) -> None:
        if writes and self.cache is not None:
            self.cache.set_many(writes)
        writes.clear()

    # --- scoring --------------------------------------------------------------------------------------
    def _semaphore(self) -> asyncio.Semaphore:
        loop_id = id(asyncio.get_running_loop())
        sem = self._sem.get(loop_id)
        if sem is None:
            sem = self._sem[loop_id] = asyncio.Semaphore(self.max_concurrency)
        return sem

    async def _score_todo(
        self,
        todo: Sequence[tuple[int, RenderedPrompt, ScoringMethod, str | None]],
        results: list[AnswerDistribution | None],
        on_result: Callable[[int, AnswerDistribution], None] | None,
    ) -> None:
        sem = self._semaphore()

        async def one(i: int, prompt: RenderedPrompt, method: ScoringMethod, key: str | None) -> None:
            async with sem:
                dist = await self._score_uncached(prompt, method, key)
            results[i] = dist
            if on_result is not None:
                on_result(i, dist)

        await asyncio.gather(*(one(*item) for item in todo))

    async def _score_one(self, prompt: RenderedPrompt, method: ScoringMethod) -> AnswerDistribution:
        key = self._score_key(prompt, method) if self.cache is not None else None
        hit = self._cached_dist(key)
        if hit is not None:
            return hit
        async with self._semaphore():
            return await self._score_uncached(prompt, method, key)

    async def _score_uncached(
        self, prompt: RenderedPrompt, method: ScoringMethod, key: str | None
    ) -> AnswerDistribution:
        dist, fallback = await self._score_fresh(prompt, method)
        self._store(prompt, key, dist, fallback)
        return dist

    async def _score_fresh(
        self, prompt: RenderedPrompt, method: ScoringMethod
    ) -> tuple[AnswerDistribution, ScoringMethod | None]:
        """Ask the model (no cache); returns the distribution and the fallback method used, if any."""
        dist = await self._score_call(prompt, method)
        if (
            dist.error is None
            and self.method is None
            and method is ScoringMethod.LOGPROB
            and dist.extra.get("no_logprobs")
        ):
            # the backend gave no log-probabilities: remember it and sample instead
            self.supports_logprobs = False
            dist = await self._score_call(prompt, ScoringMethod.SAMPLE)
            dist = dataclasses.replace(dist, extra={**dist.extra, "fallback_from": "logprob"})
            return dist, ScoringMethod.SAMPLE
        return dist, None

    def _store(
        self,
        prompt: RenderedPrompt,
        key: str | None,
        dist: AnswerDistribution,
        fallback: ScoringMethod | None,
        writes: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        """Count a failure, or cache a result (under the fallback's key too: a re-run makes no call).

        With ``writes``, the cache entries are appended there for the caller to store in one transaction.
        """
        if dist.error is not None:
            self.stats.add(failures=1)
            return
        if fallback is not None:
            self.supports_logprobs = False
        if self.cache is None:
            return
        data = dist_to_json(dist)
        entries = [(k, data) for k in (self._score_key(prompt, fallback) if fallback else None, key) if k]
        if writes is None:
            self.cache.set_many(entries)
        else:
            writes.extend(entries)

    async def _score_call(self, prompt: RenderedPrompt, method: ScoringMethod) -> AnswerDistribution:
        if self.is_text_model:
            messages = [{"role": "user", "content": prompt.text}]
        else:
            messages = [dict(m) for m in prompt.messages]
        kwargs: dict[str, Any] = {"messages": messages}
        if method is ScoringMethod.LOGPROB and self.is_text_model:
            kwargs[SCORE_PARAM] = {"text": prompt.text, "continuations": list(prompt.continuations)}
            kwargs["max_tokens"] = 1
        elif method is ScoringMethod.LOGPROB:
            kwargs |= {"max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_logprobs}
        elif method is ScoringMethod.SAMPLE:
            kwargs |= {"max_tokens": ANSWER_MAX_TOKENS, "temperature": self.temperature, "n": self.n_samples}
        else:
            kwargs |= {"max_tokens": ANSWER_MAX_TOKENS, "temperature": 0.0}
        if self.is_text_model and method is not ScoringMethod.LOGPROB:
            kwargs["stop"] = ["\n"]
        try:
            response, latency = await self._call(kwargs)
            if method is ScoringMethod.SAMPLE:
                answers = [c.message.content or "" for c in response.choices]
                while len(answers) < self.n_samples:  # backends that ignore n answer once per request
                    kwargs["n"] = self.n_samples - len(answers)
                    more, extra_latency = await self._call(kwargs)
                    latency += extra_latency
                    answers += [c.message.content or "" for c in more.choices]
                dist = scoring.from_samples(prompt, answers[: self.n_samples])
            elif method is ScoringMethod.GREEDY:
                dist = scoring.from_greedy(prompt, response.choices[0].message.content or "")
            elif self.is_text_model:
                scores = response._hidden_params.get(SCORES_KEY)
                if not scores:
                    raise _CallFailed("the embedded provider returned no option scores")
                dist = scoring.from_option_logprobs(prompt, scores["token_logprobs"])
                dist = dataclasses.replace(
                    dist,
                    extra={
                        **dist.extra,
                        "prompt_tokens": scores["prompt_tokens"],
                        "reused_tokens": scores["reused_tokens"],
                    },
                )
            else:
                dist = self._from_chat_logprobs(prompt, response)
        except _CallFailed as exc:
            return AnswerDistribution(options=prompt.options, probs=(), method=method, error=str(exc))
        usage = getattr(response, "usage", None)
        return dataclasses.replace(
            dist,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost_usd=self._cost(response),
            latency_s=round(latency, 6),
        )

    def _from_chat_logprobs(self, prompt: RenderedPrompt, response: Any) -> AnswerDistribution:
        choice = response.choices[0]
        raw = choice.message.content
        pairs = _first_token_top_logprobs(getattr(choice, "logprobs", None))
        if not pairs:
            return AnswerDistribution(
                options=prompt.options,
                probs=(),
                method=ScoringMethod.LOGPROB,
                invalid=True,
                raw_answer=raw,
                extra={"no_logprobs": True},
            )
        return scoring.from_top_logprobs(prompt, pairs, raw_answer=raw)

    def _cost(self, response: Any) -> float | None:
        """LiteLLM's cost of a response (it prices known models when the call returns); None when unknown."""
        if self.is_text_model:
            return 0.0
        hidden = getattr(response, "_hidden_params", None) or {}
        cost = hidden.get("response_cost")
        try:
            return float(cost) if cost is not None else None
        except (TypeError, ValueError):
            return None

    # --- calls ----------------------------------------------------------------------------------------
    def _api_key(self) -> str | None:
        env = self.spec.api_key_env
        if not env:
            return _placeholder_key(self.spec.model, self.spec.api_base)
        value = os.environ.get(env)
        if not value:
            raise _CallFailed(f"environment variable {env} (the API key of {self.spec.name}) is not set")
        return value

    def _get_router(self) -> Any:
        if self._router is None:
            litellm = self._litellm
            model_list = []
            for d in self.spec.deployments:
                params: dict[str, Any] = {"model": d.model, **d.params}
                if d.api_base:
                    params["api_base"] = d.api_base
                if d.api_key_env:
                    key = os.environ.get(d.api_key_env)
                    if not key:
                        raise _CallFailed(
                            f"environment variable {d.api_key_env} (an API key of {self.spec.name}) is not set"
                        )
                    params["api_key"] = key
                elif _placeholder_key(d.model, d.api_base):
                    params["api_key"] = _placeholder_key(d.model, d.api_base)
                model_list.append({"model_name": self.spec.name, "litellm_params": params})
            self._router = litellm.Router(
                model_list=model_list, num_retries=0, timeout=self.timeout_s, routing_strategy="simple-shuffle"
            )
        return self._router

    async def _call(self, kwargs: dict[str, Any]) -> tuple[Any, float]:
        """One LiteLLM request with retries; returns (response, latency of the successful attempt)."""
        if self._litellm is None:
            self._litellm = import_litellm()
        litellm = self._litellm
        secrets: list[str | None] = []
        request = {**self.litellm_params, **kwargs, "timeout": self.timeout_s}
        if not self.is_text_model:
            request |= {"max_retries": 0, "num_retries": 0}
            if _is_local(self.spec.api_base) and "input_cost_per_token" not in request:
                # a server on this machine bills nothing: its calls cost 0, not an unknown price
                request |= {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0}
        attempt = 0
        global _litellm_called_in
        while True:
            start = time.perf_counter()
            try:
                if self.spec.uses_router:
                    router = self._get_router()
                    call = router.acompletion(model=self.spec.name, **request)
                else:
                    api_key = self._api_key()
                    secrets = [api_key]
                    extra = {"api_base": self.spec.api_base} if self.spec.api_base else {}
                    if api_key:
                        extra["api_key"] = api_key
                    call = litellm.acompletion(model=self.spec.model, **request, **extra)
                try:
                    if self.is_text_model:
                        response = await call
                    else:
                        response = await asyncio.wait_for(call, self.timeout_s + 5.0)
                finally:
                    _litellm_called_in = os.getpid()
            except _CallFailed:
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                latency = time.perf_counter() - start
                self.stats.add(calls=1, latency_s=latency)
                if attempt >= self.max_retries or not _is_retryable(exc, litellm):
                    raise _CallFailed(_one_line(exc, secrets)) from None
                delay = _retry_after(exc)
                if delay is None:
                    delay = min(30.0, self.backoff_s * (2**attempt)) * random.uniform(0.5, 1.5)
                attempt += 1
                self.stats.add(retries=1)
                await asyncio.sleep(delay)
                continue
            latency = time.perf_counter() - start
            usage = getattr(response, "usage", None)
            self.stats.add(
                calls=1,
                latency_s=latency,
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                cost_usd=self._cost(response),
            )
            return response, latency


_routes: dict[str, ModelClient] = {}
_routes_lock = threading.Lock()


def register_route(model: str, *, api_base: str | None = None, cache_dir: str | Path | None = None) -> str:
    """Register the shared :class:`ModelClient` that ``selfalign/cached/<route>`` calls use; return ``route``.

    The route is the model string itself for the default cache and base, else the model string with a short
    hash of the base and cache directory (``openai/x#1a2b3c4d``); no key is part of it.
    """
    if api_base is None and cache_dir is None:
        route = model
    else:
        digest = hashlib.sha256(f"{api_base or ''}|{Path(cache_dir).expanduser() if cache_dir else ''}".encode())
        route = f"{model}#{digest.hexdigest()[:8]}"
    with _routes_lock:
        if route not in _routes:
            _routes[route] = ModelClient(model, api_base=api_base, cache=open_cache(cache_dir))
    return route


def client_for(route: str) -> ModelClient:
    """The client registered for ``route`` (a model string gets a default client on first use)."""
    with _routes_lock:
        client = _routes.get(route)
    if client is None:
        register_route(route.split("#", 1)[0])
        with _routes_lock:
            client = _routes[route.split("#", 1)[0]]
    return client
