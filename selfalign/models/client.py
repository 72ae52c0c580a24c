"""ModelClient: answer distributions and generations from any model, through LiteLLM, with one disk cache.

Every call goes through :class:`~selfalign.models.calls.Caller` (``litellm.acompletion``, or ``litellm.Router``
for an alias with several deployments); the embedded model is the ``selfalign`` custom provider (see
:mod:`selfalign.models.provider`). Calls run on one background event loop per process, at most
``max_concurrency`` in flight (the embedded model: one), each with a timeout and retried on transient errors.
A call that still fails gives an :class:`AnswerDistribution` with ``error`` set (one line, keys redacted),
never cached and never counted as an answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from selfalign import DEFAULT_MODEL
from selfalign.errors import ModelError
from selfalign.models import calls, routes, scoring
from selfalign.models.cache import ResultCache, cache_key, open_cache
from selfalign.models.calls import Caller, CallFailed, ClientStats, run_sync
from selfalign.models.config import ModelSpec, resolve_model
from selfalign.models.redact import SECRET_PARAM
from selfalign.models.types import AnswerDistribution, RenderedPrompt, ScoringMethod, dist_from_json, dist_to_json
from selfalign.models.wire import SCORE_PARAM, SCORES_KEY
from selfalign.models.workers import WorkerPool, can_fork

EMBEDDED_SCORING = "mean-token-logprob/softmax/v1"  # bump when the embedded scoring changes
ANSWER_MAX_TOKENS = 32  # free-text answers (sample, greedy) are short: a label or an option text
WORKERS_MIN_PROBES = 200  # hosted batches at least this large are spread over worker processes
CALLS_PER_WORKER = 4  # default: one worker process per this many calls in flight ...
MAX_WORKERS = 8  # ... and at most this many
CACHE_WRITE_BLOCK = 32  # results of worker processes are cached in transactions of this many entries

__all__ = ["ClientStats", "ModelClient", "run_sync"]


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
        self.caller = Caller(
            self.spec,
            self.litellm_params,
            self.stats,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
        )
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
        self.stats.add(requests=len(prompts))
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
            response, _latency = await self.caller.call(kwargs)
        except CallFailed as exc:
            raise ModelError(f"{self.model}: {exc}") from None
        text = response.choices[0].message.content or ""
        if key is not None and self.cache is not None:
            self.cache.set(key, {"text": text, "model": self.model})
        return text

    # --- keys -----------------------------------------------------------------------------------------
    def _key_params(self) -> dict[str, Any]:
        return {k: v for k, v in sorted(self.litellm_params.items()) if not SECRET_PARAM.search(k)}

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
                if calls.litellm_called_in != os.getpid():
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
            response, latency = await self.caller.call(kwargs)
            if method is ScoringMethod.SAMPLE:
                answers = [c.message.content or "" for c in response.choices]
                while len(answers) < self.n_samples:  # backends that ignore n answer once per request
                    kwargs["n"] = self.n_samples - len(answers)
                    more, extra_latency = await self.caller.call(kwargs)
                    latency += extra_latency
                    answers += [c.message.content or "" for c in more.choices]
                dist = scoring.from_samples(prompt, answers[: self.n_samples])
            elif method is ScoringMethod.GREEDY:
                dist = scoring.from_greedy(prompt, response.choices[0].message.content or "")
            elif self.is_text_model:
                scores = response._hidden_params.get(SCORES_KEY)
                if not scores:
                    raise CallFailed("the embedded provider returned no option scores")
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
        except CallFailed as exc:
            return AnswerDistribution(options=prompt.options, probs=(), method=method, error=str(exc))
        usage = getattr(response, "usage", None)
        return dataclasses.replace(
            dist,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost_usd=calls.response_cost(response, self.is_text_model),
            latency_s=round(latency, 6),
        )

    def _from_chat_logprobs(self, prompt: RenderedPrompt, response: Any) -> AnswerDistribution:
        choice = response.choices[0]
        raw = choice.message.content
        pairs = scoring.first_token_top_logprobs(getattr(choice, "logprobs", None))
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


def shared_client(
    model: str = DEFAULT_MODEL,
    *,
    api_base: str | None = None,
    cache_dir: str | Path | None = None,
    config: str | Path | None = None,
    use_cache: bool = True,
    **settings: Any,
) -> ModelClient:
    """The process's one :class:`ModelClient` for ``model`` with these settings (created on first use).

    DSPy LMs from :func:`selfalign.models.dspy_lm` and the runner share it, so their calls meet in one cache,
    one set of statistics and one concurrency limit; ``use_cache=False`` gives one that neither reads nor writes
    the cache. ``settings`` are ModelClient keyword arguments
    (``timeout_s``, ``max_retries``, ``max_concurrency``, ``method``, ...).
    """
    route = routes.route_name(
        model, api_base=api_base, cache_dir=cache_dir, config=config, no_cache=None if use_cache else True, **settings
    )

    def make() -> ModelClient:
        cache = open_cache(cache_dir) if use_cache else False
        return ModelClient(model, api_base=api_base, cache=cache, config=config, **settings)

    return routes.register(route, make)


def route_of(client: ModelClient) -> str:
    """The route name under which ``client`` is registered (see :func:`shared_client`)."""
    for route, registered in routes.registered().items():
        if registered is client:
            return route
    raise ModelError(f"{client!r} is not a shared client; create it with shared_client()")


routes.set_default_factory(lambda model: shared_client(model))
