"""ModelClient: answer distributions and generations from any model, through LiteLLM, with one disk cache.

Every call goes through :class:`~selfalign.models.calls.Caller` (``litellm.acompletion``, or ``litellm.Router``
for an alias with several deployments); the embedded model is the ``selfalign`` custom provider (see
:mod:`selfalign.models.provider`). Calls run on one background event loop per process, at most
``max_concurrency`` in flight (the embedded model: one), each with a timeout and retried on transient errors.
A call that still fails gives an :class:`AnswerDistribution` with ``error`` set (one line, keys redacted),
never cached and never counted as an answer.

Methods (:class:`~selfalign.models.types.ScoringMethod`): ``logprob`` (exact option scoring in-process for the
embedded model, ``top_logprobs`` of the answer letter for chat models), ``completion`` (a base model behind a
text-completions server: each option scored as a continuation, many probes per request, see
:mod:`selfalign.models.completion_batches`), ``sample``, ``greedy`` and ``verbalized`` (the model states the
share of respondents per option, see :mod:`selfalign.models.verbalized`). Everything a result holds that
came from the model (answers, errors) has every secret the process knows masked before it is cached or
returned (:mod:`selfalign.models.redact`).
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
from selfalign.models import calls, routes, scoring, verbalized
from selfalign.models.cache import ResultCache, cache_key, open_cache
from selfalign.models.calls import Caller, CallFailed, ClientStats, run_sync
from selfalign.models.completion_batches import CompletionScorer
from selfalign.models.completions import COMPLETION_SCORING, ECHO
from selfalign.models.config import ModelSpec, check_setting, resolve_model
from selfalign.models.redact import SECRET_PARAM, redact, redact_obj, register_secret
from selfalign.models.types import AnswerDistribution, RenderedPrompt, ScoringMethod, dist_from_json, dist_to_json
from selfalign.models.wire import SCORE_PARAM, SCORES_KEY
from selfalign.models.workers import WorkerPool, can_fork

EMBEDDED_SCORING = "mean-token-logprob/softmax/v1"  # bump when the embedded scoring changes
ANSWER_MAX_TOKENS = 32  # free-text answers (sample, greedy) are short: a label or an option text
WORKERS_MIN_PROBES = 200  # hosted batches at least this large are spread over worker processes
CALLS_PER_WORKER = 4  # default: one worker process per this many calls in flight ...
MAX_WORKERS = 8  # ... and at most this many
CACHE_WRITE_BLOCK = 32  # results of worker processes are cached in transactions of this many entries
DEFAULTS: dict[str, Any] = {
    "timeout_s": 60.0,
    "max_retries": 3,
    "batch_size": 8,
    "completion_logprobs": ECHO,
    "max_concurrency": 8,
}
"""Client settings used where neither an argument nor the model's alias sets them."""

__all__ = ["ClientStats", "ModelClient", "run_sync"]


class ModelClient:
    """Answer distributions (:meth:`score`) and generations (:meth:`complete`) from one model.

    ``model`` is a LiteLLM model string, a configured alias or the embedded ``selfalign/gemma-3-270m``.
    ``method`` forces a scoring method; by default it is ``logprob`` when the model gives log-probabilities and
    ``sample`` otherwise (and a model that returns no log-probabilities falls back to ``sample``).
    ``cache``: None opens the default cache, False disables caching, or a :class:`ResultCache` (or a
    directory). ``retry_invalid``: a cached answer that was invalid (off-format) is asked again (and the new
    answer cached in its place), so a rerun against a fixed server does not keep it. ``workers``: processes
    that share a large hosted batch of chat calls (LiteLLM costs a few ms of CPU per call, and on one event
    loop those milliseconds queue behind each other); default: one per 4 calls in flight (at most 8) for
    batches of 200 or more on platforms that fork, 1 otherwise; the ``completion`` method batches probes in
    its requests instead and always runs here. The workers are forked once, kept for later batches and
    stopped by :meth:`close` (or when the client is garbage-collected).

    ``method``, ``timeout_s``, ``max_retries``, ``batch_size`` (probes per completions request, and per
    call to the embedded model),
    ``completion_logprobs`` (``echo``, ``prompt_logprobs`` or ``grammar``) and ``max_concurrency`` default to
    the model's alias in ``models.toml``, then to :data:`DEFAULTS`; a bad value is a one-line
    :class:`~selfalign.errors.SelfAlignError`. Extra keyword arguments are passed to every LiteLLM call (never
    put keys there: use the provider's environment variable or a config alias with ``api_key_env``).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        method: ScoringMethod | str | None = None,
        api_base: str | None = None,
        cache: ResultCache | str | Path | bool | None = None,
        max_concurrency: int | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        n_samples: int = 20,
        temperature: float = 1.0,
        top_logprobs: int = 20,
        config: str | Path | None = None,
        backoff_s: float = 0.5,
        workers: int | None = None,
        batch_size: int | None = None,
        completion_logprobs: str | None = None,
        retry_invalid: bool = False,
        **litellm_params: Any,
    ) -> None:
        self.spec: ModelSpec = resolve_model(model, config=config, api_base=api_base)
        self.model = model
        self.is_text_model = self.spec.is_embedded
        self.supports_logprobs = self.spec.supports_logprobs
        given = {
            "method": method,
            "timeout_s": timeout_s,
            "max_retries": max_retries,
            "batch_size": batch_size,
            "completion_logprobs": completion_logprobs,
            "max_concurrency": max_concurrency,
        }
        settings = {k: check_setting(k, v, f"{model}: ") for k, v in given.items()}
        for key, value in self.spec.settings.items():
            if settings.get(key) is None:
                settings[key] = value
        self.method: ScoringMethod | None = settings["method"]
        if self.method is ScoringMethod.COMPLETION and self.is_text_model:
            raise ModelError(
                f"{model} scores its options in-process (method logprob); method 'completion' is for a base model "
                "behind a text-completions server"
            )
        if self.method is ScoringMethod.COMPLETION:
            self.supports_logprobs = True
        if cache is None or cache is True:
            self.cache: ResultCache | None = open_cache()
        elif cache is False:
            self.cache = None
        elif isinstance(cache, ResultCache):
            self.cache = cache
        else:
            self.cache = open_cache(cache)
        concurrency = int(settings["max_concurrency"] or DEFAULTS["max_concurrency"])
        self.max_concurrency = 1 if self.is_text_model else concurrency
        self.timeout_s = float(settings["timeout_s"] or DEFAULTS["timeout_s"])
        retries = settings["max_retries"]
        self.max_retries = 0 if self.is_text_model else int(DEFAULTS["max_retries"] if retries is None else retries)
        self.batch_size = int(settings["batch_size"] or DEFAULTS["batch_size"])
        self.completion_logprobs = str(settings["completion_logprobs"] or DEFAULTS["completion_logprobs"])
        self.n_samples = check_setting("n_samples", n_samples, f"{model}: ")
        self.temperature = check_setting("temperature", temperature, f"{model}: ")
        self.top_logprobs = max(1, min(20, int(top_logprobs)))
        self.backoff_s = float(backoff_s)
        self.workers = None if workers is None else max(1, int(workers))
        self.retry_invalid = bool(retry_invalid)
        for name in litellm_params:
            if name.lower() in ("api_key", "key") or name.lower().endswith("_api_key"):
                raise ModelError(
                    "pass API keys through the environment (or a config alias with api_key_env), "
                    "not as arguments: they must never reach caches or logs"
                )
        for env in [self.spec.api_key_env, *(d.api_key_env for d in self.spec.deployments)]:
            if env:  # known from the start, so that anything a server echoes of it is masked
                register_secret(os.environ.get(env))
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
        self.completions = CompletionScorer(
            self.caller, model, style=self.completion_logprobs, local=calls.is_local(self.spec.api_base)
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

    def reads_transcript(self, method: ScoringMethod | None = None) -> bool:
        """Whether the model is shown the plain transcript (a base model) rather than the chat messages."""
        method = method or self.method_for()
        return (self.is_text_model and method is ScoringMethod.LOGPROB) or method is ScoringMethod.COMPLETION

    def _method(self, method: ScoringMethod | str | None) -> ScoringMethod:
        if method is None:
            return self.method_for()
        chosen = check_setting("method", method, f"{self.model}: ")
        if chosen is ScoringMethod.COMPLETION and self.is_text_model:
            raise ModelError(f"{self.model} scores its options in-process: use method logprob, not completion")
        return chosen

    def order(self, prompts: Sequence[RenderedPrompt], *, method: ScoringMethod | str | None = None) -> list[int]:
        """Indices of ``prompts`` in the order to send them to :meth:`score_many`: by transcript, so that
        consecutive prompts share their longest prefixes; for the embedded model the uncached ones in the
        order its KV cache reuses the most (:meth:`selfalign.models.embedded.EmbeddedModel.order`, which
        tokenizes them; with every prompt cached, the model is not loaded)."""
        by_text = sorted(range(len(prompts)), key=lambda i: prompts[i].text)
        chosen = self._method(method)
        if not self.is_text_model or chosen is not ScoringMethod.LOGPROB:
            return by_text
        fresh = [i for i in by_text if self.cache is None or self._score_key(prompts[i], chosen) not in self.cache]
        if not fresh:
            return by_text
        from selfalign.models.embedded import get_embedded_model

        ranked = get_embedded_model().order([prompts[i].text for i in fresh])
        uncached = set(fresh)
        return [i for i in by_text if i not in uncached] + [fresh[j] for j in ranked]

    def score(self, prompt: RenderedPrompt, *, method: ScoringMethod | str | None = None) -> AnswerDistribution:
        """The model's distribution over the options of one probe (never raises for model failures).

        ``method`` overrides the client's method for this call.
        """
        return self.score_many([prompt], method=method)[0]

    async def ascore(self, prompt: RenderedPrompt, *, method: ScoringMethod | str | None = None) -> AnswerDistribution:
        """Async :meth:`score`, for callers that run their own event loop."""
        chosen = self._method(method)
        key = self._score_key(prompt, chosen) if self.cache is not None else None
        hit = self._cached_dist(key)
        if hit is not None:
            return hit
        results: list[AnswerDistribution | None] = [None]
        await self._score_todo([(0, prompt, chosen, key)], results, None)
        return results[0]  # type: ignore[return-value]

    def score_many(
        self,
        prompts: Sequence[RenderedPrompt],
        on_result: Callable[[int, AnswerDistribution], None] | None = None,
        *,
        method: ScoringMethod | str | None = None,
    ) -> list[AnswerDistribution]:
        """Distributions for many probes, in input order, with at most ``max_concurrency`` calls in flight.

        Cached results are returned first without touching the event loop; ``on_result(index, dist)`` is
        called as each result is ready (from the calling thread for cache hits and worker-pool results, else
        from the models' event loop thread), e.g. for progress bars and incremental saving. ``method``
        overrides the client's method for these probes.
        """
        chosen = self._method(method)
        self.stats.add(requests=len(prompts))
        results: list[AnswerDistribution | None] = [None] * len(prompts)
        todo: list[tuple[int, RenderedPrompt, ScoringMethod, str | None]] = []
        for i, prompt in enumerate(prompts):
            key = self._score_key(prompt, chosen) if self.cache is not None else None
            hit = self._cached_dist(key)
            if hit is not None:
                results[i] = hit
                if on_result is not None:
                    on_result(i, hit)
            else:
                todo.append((i, prompt, chosen, key))
        if todo:
            workers = self._workers_for(len(todo), chosen)
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
        the call fails after retries. Every secret the process knows is masked in the reply.
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
        text = redact(response.choices[0].message.content or "", patterns=False)
        if key is not None and self.cache is not None:
            self.cache.set(key, {"text": text, "model": self.model})
        return text

    # --- keys -----------------------------------------------------------------------------------------
    def _key_params(self) -> dict[str, Any]:
        return {k: v for k, v in sorted(self.litellm_params.items()) if not SECRET_PARAM.search(k)}

    def _score_key(self, prompt: RenderedPrompt, method: ScoringMethod) -> str:
        if self.reads_transcript(method):
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
        elif method is ScoringMethod.COMPLETION:
            params = {"scoring": COMPLETION_SCORING, "completion_logprobs": self.completion_logprobs}
        elif method is ScoringMethod.SAMPLE:
            params = {"n": self.n_samples, "temperature": self.temperature, "max_tokens": ANSWER_MAX_TOKENS}
        elif method is ScoringMethod.VERBALIZED:
            params = {"scoring": verbalized.VERBALIZED_SCORING, "temperature": 0.0}
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
        if self.retry_invalid and hit.get("invalid"):
            return None  # asked again; the new answer replaces it
        self.stats.add(cache_hits=1)
        return dist_from_json(hit)

    def close(self) -> None:
        """Stop this client's worker processes, if any (a later large batch starts new ones)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _workers_for(self, pending: int, method: ScoringMethod | None = None) -> int:
        """Worker processes for a batch of ``pending`` uncached probes (1: score here, on the event loop)."""
        if (method or self.method_for()) is ScoringMethod.COMPLETION:
            return 1  # many probes per request: the calls are few, the client's CPU per probe small
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

        def done(i: int, dist: AnswerDistribution) -> None:
            results[i] = dist
            if on_result is not None:
                on_result(i, dist)

        in_batches = todo and (
            todo[0][2] is ScoringMethod.COMPLETION or (self.is_text_model and todo[0][2] is ScoringMethod.LOGPROB)
        )
        if in_batches:
            size = self.batch_size
            score_batch = self.completions.score if todo[0][2] is ScoringMethod.COMPLETION else self._score_embedded

            async def batch(items: Sequence[tuple[int, RenderedPrompt, ScoringMethod, str | None]]) -> None:
                async with sem:
                    dists = await score_batch([prompt for _i, prompt, _m, _k in items])
                writes: list[tuple[str, dict[str, Any]]] = []
                for (i, prompt, _method, key), dist in zip(items, dists, strict=True):
                    dist = sanitized(dist)
                    self._store(prompt, key, dist, None, writes)
                    done(i, dist)
                self._flush(writes)

            await asyncio.gather(*(batch(todo[k : k + size]) for k in range(0, len(todo), size)))
            return

        async def one(i: int, prompt: RenderedPrompt, method: ScoringMethod, key: str | None) -> None:
            async with sem:
                dist = await self._score_uncached(prompt, method, key)
            done(i, dist)

        await asyncio.gather(*(one(*item) for item in todo))

    async def _score_uncached(
        self, prompt: RenderedPrompt, method: ScoringMethod, key: str | None
    ) -> AnswerDistribution:
        dist, fallback = await self._score_fresh(prompt, method)
        self._store(prompt, key, dist, fallback)
        return dist

    async def _score_fresh(
        self, prompt: RenderedPrompt, method: ScoringMethod
    ) -> tuple[AnswerDistribution, ScoringMethod | None]:
        """Ask the model (no cache); returns the distribution (secrets masked) and the fallback method used."""
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
            return sanitized(dist), ScoringMethod.SAMPLE
        return sanitized(dist), None

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

    async def _score_embedded(self, prompts: Sequence[RenderedPrompt]) -> list[AnswerDistribution]:
        """Exact option scores of the embedded model for several probes in one LiteLLM call (see
        :mod:`selfalign.models.provider`): a probe the model cannot score fails alone, a failed call fails all."""
        request = [{"text": p.text, "continuations": list(p.continuations)} for p in prompts]
        kwargs = {"messages": [{"role": "user", "content": prompts[0].text}], SCORE_PARAM: {"probes": request}}
        try:
            response, _latency = await self.caller.call(kwargs | {"max_tokens": 1})
            results = (response._hidden_params.get(SCORES_KEY) or {}).get("probes")
            if not isinstance(results, list) or len(results) != len(prompts):
                raise CallFailed("the embedded provider returned no option scores")
        except CallFailed as exc:
            return [AnswerDistribution.failure(p, ScoringMethod.LOGPROB, str(exc)) for p in prompts]
        out: list[AnswerDistribution] = []
        for prompt, result in zip(prompts, results, strict=True):
            if result.get("error"):
                dist = AnswerDistribution.failure(prompt, ScoringMethod.LOGPROB, str(result["error"]))
            else:
                dist = scoring.from_option_logprobs(prompt, result["token_logprobs"])
                dist = dataclasses.replace(
                    dist,
                    extra={
                        **dist.extra,
                        "prompt_tokens": result["prompt_tokens"],
                        "reused_tokens": result["reused_tokens"],
                    },
                    prompt_tokens=int(result["evaluated_tokens"]),
                    completion_tokens=0,
                    cost_usd=0.0,
                    latency_s=round(float(result["seconds"]), 6),
                )
            out.append(dist)
        return out

    async def _score_call(self, prompt: RenderedPrompt, method: ScoringMethod) -> AnswerDistribution:
        if method is ScoringMethod.VERBALIZED:
            messages = verbalized.messages(prompt)
        elif self.is_text_model:
            messages = [{"role": "user", "content": prompt.text}]
        else:
            messages = [dict(m) for m in prompt.messages]
        kwargs: dict[str, Any] = {"messages": messages}
        if method is ScoringMethod.LOGPROB:
            kwargs |= {"max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_logprobs}
        elif method is ScoringMethod.SAMPLE:
            kwargs |= {"max_tokens": ANSWER_MAX_TOKENS, "temperature": self.temperature, "n": self.n_samples}
        elif method is ScoringMethod.VERBALIZED:
            kwargs |= {"max_tokens": verbalized.max_tokens_for(prompt), "temperature": 0.0}
        else:
            kwargs |= {"max_tokens": ANSWER_MAX_TOKENS, "temperature": 0.0}
        if self.is_text_model and method in (ScoringMethod.SAMPLE, ScoringMethod.GREEDY):
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
            elif method is ScoringMethod.VERBALIZED:
                dist = verbalized.from_reply(prompt, response.choices[0].message.content or "")
            else:
                dist = self._from_chat_logprobs(prompt, response)
        except CallFailed as exc:
            return AnswerDistribution.failure(prompt, method, str(exc))
        prompt_tokens, completion_tokens = calls.usage_tokens(response)
        return dataclasses.replace(
            dist,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
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


def sanitized(dist: AnswerDistribution) -> AnswerDistribution:
    """``dist`` with every secret the process knows masked in what came from the model (answer, error, extra).

    Errors also lose key-shaped strings (``sk-...``, bearer tokens); answers only known secrets, whole or in
    part, so that an ordinary answer is never altered.
    """
    raw = redact(dist.raw_answer, patterns=False) if dist.raw_answer else dist.raw_answer
    error = redact(dist.error) if dist.error else dist.error
    extra = redact_obj(dist.extra, patterns=False) if dist.extra else dist.extra
    if raw == dist.raw_answer and error == dist.error and extra == dist.extra:
        return dist
    return dataclasses.replace(dist, raw_answer=raw, error=error, extra=extra)  # type: ignore[arg-type]


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
