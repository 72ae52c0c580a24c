"""A pool of forked worker processes that share a client's hosted calls.

LiteLLM spends a few milliseconds of CPU on every call (building the request, parsing the response, pricing
and logging it). On one event loop those milliseconds queue up: when a round of answers arrives together,
the last one waits for all the others to be parsed, and at 32 calls in flight the queue costs more than the
server does. Each worker here runs its own event loop with a share of the concurrency, so the parsing
overlaps. Workers are forked (they start with LiteLLM already imported and warm), live as long as their
:class:`~selfalign.models.client.ModelClient` (or until :meth:`WorkerPool.close`), and only ever call the
model: the cache, the stats and the callbacks stay in the parent, which receives every result.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from selfalign.models.redact import one_line
from selfalign.models.types import AnswerDistribution, RenderedPrompt, ScoringMethod, dist_from_json, dist_to_json

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

ModelClient = Any  # a selfalign.models.client.ModelClient (not imported: the client imports this module)

Item = tuple[int, RenderedPrompt, ScoringMethod]
OnResult = Callable[[int, AnswerDistribution, "ScoringMethod | None"], None]


def can_fork() -> bool:
    """Whether this platform can fork worker processes (Linux)."""
    import multiprocessing
    import sys

    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def split_concurrency(total: int, workers: int) -> list[int]:
    """Share ``total`` calls in flight among ``workers`` (at most ``total`` workers, each at least one call)."""
    workers = max(1, min(workers, total))
    return [total // workers + (1 if k < total % workers else 0) for k in range(workers)]


class WorkerPool:
    """Worker processes forked from ``client``, each with its own event loop and a share of its concurrency.

    :meth:`score` hands out a batch of probes and blocks until every one has a result; a worker that dies or
    stalls leaves its unanswered probes failed (never lost silently) and breaks the pool, which the client
    then replaces on its next batch.
    """

    def __init__(self, client: ModelClient, workers: int) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self.concurrency = split_concurrency(client.max_concurrency, workers)
        self.stall_s = client.timeout_s * (client.max_retries + 2) + 60.0
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        self._batches = itertools.count()
        self.broken: str | None = None
        gc.freeze()  # the workers then share the parent's objects instead of copying them on their first GC
        try:
            for share in self.concurrency:
                parent_end, child_end = ctx.Pipe(duplex=True)
                inherited = [*self._conns, parent_end]
                proc = ctx.Process(target=_serve, args=(client, child_end, share, inherited), daemon=True)
                proc.start()
                child_end.close()
                self._conns.append(parent_end)
                self._procs.append(proc)
        finally:
            gc.unfreeze()

    @property
    def size(self) -> int:
        """Number of worker processes."""
        return len(self._procs)

    @property
    def pids(self) -> list[int | None]:
        """The workers' process ids."""
        return [p.pid for p in self._procs]

    @property
    def alive(self) -> bool:
        """True while every worker runs and none has failed."""
        return self.broken is None and all(p.is_alive() for p in self._procs)

    def score(self, items: Sequence[Item], on_result: OnResult, on_stats: Callable[[dict[str, Any]], None]) -> None:
        """Score ``items`` on the workers; ``on_result(index, dist, fallback)`` runs here for each result and
        ``on_stats(counters)`` once per worker with its call counters for the batch.

        Items are handed out as results come back (each worker holds twice its share of calls in flight, half
        of them queued), so a slow worker or a slow answer holds up nothing else. Items the workers could not
        answer (a worker died, or none gave anything for ``stall_s``) are reported as failed distributions
        and break the pool. Any exception here (Ctrl-C included) kills the workers before it propagates.
        """
        batch = next(self._batches)
        queue = deque(items)
        held: dict[Connection, dict[int, Item]] = {conn: {} for conn in self._conns}
        share = dict(zip(self._conns, self.concurrency, strict=True))
        try:
            for conn in self._conns:
                self._hand_out(conn, batch, queue, held[conn], 2 * share[conn])
            self._collect(batch, queue, held, on_result)
            if self.broken is None:
                self._gather_stats(batch, on_stats)
        except BaseException:
            self.close(kill=True)
            raise
        unanswered = [item for by_index in held.values() for item in by_index.values()] + list(queue)
        if unanswered:
            self.close(kill=True)
        for i, prompt, method in sorted(unanswered, key=lambda item: item[0]):
            failed = AnswerDistribution.failure(prompt, method, self.broken)
            on_result(i, failed, None)

    @staticmethod
    def _hand_out(conn: Connection, batch: int, queue: deque[Item], held: dict[int, Item], n: int) -> None:
        chunk = [queue.popleft() for _ in range(min(n, len(queue)))]
        if chunk:
            conn.send(("score", batch, chunk))
            held.update((item[0], item) for item in chunk)

    def _collect(
        self, batch: int, queue: deque[Item], held: dict[Connection, dict[int, Item]], on_result: OnResult
    ) -> None:
        waiting = {conn for conn, by_index in held.items() if by_index}
        for conn, message in self._receive(waiting, "result"):
            if message[0] == "error":
                self.broken = f"worker process failed: {message[1]}"
                waiting.discard(conn)
                continue
            if message[0] != "result" or message[1] != batch:
                continue
            _kind, _batch, i, data, fallback = message
            held[conn].pop(i, None)
            if queue:
                self._hand_out(conn, batch, queue, held[conn], 1)
            on_result(i, dist_from_json(data, cached=False), ScoringMethod(fallback) if fallback else None)
            if not held[conn]:
                waiting.discard(conn)

    def _gather_stats(self, batch: int, on_stats: Callable[[dict[str, Any]], None]) -> None:
        """Ask every worker for its call counters of this batch."""
        for conn in self._conns:
            conn.send(("stats", batch))
        waiting = set(self._conns)
        for conn, message in self._receive(waiting, "statistics"):
            if message[0] == "stats" and message[1] == batch:
                on_stats(message[2])
                waiting.discard(conn)

    def _receive(self, waiting: set[Connection], what: str) -> Iterator[tuple[Connection, Any]]:
        """Messages from the workers in ``waiting`` as they come, until the caller has emptied it.

        A worker whose pipe closes is dropped, and silence for ``stall_s`` ends the loop; both break the pool.
        """
        from multiprocessing.connection import wait

        while waiting:
            ready = wait(list(waiting), timeout=self.stall_s)
            if not ready:
                self.broken = f"worker processes gave no {what} for {self.stall_s:.0f} s"
                return
            for conn in ready:
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    self.broken = "a worker process ended without answering (killed, or out of memory?)"
                    waiting.discard(conn)
                    continue
                yield conn, message

    def close(self, *, kill: bool = False) -> None:
        """Stop the workers (politely, unless ``kill``); idempotent."""
        if self.broken is None:
            self.broken = "the worker pool was closed"
        for conn in self._conns:
            if not kill:
                with contextlib.suppress(Exception):
                    conn.send(None)
        deadline = time.monotonic() + (0.0 if kill else 5.0)
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._conns, self._procs = [], []


def _serve(client: ModelClient, conn: Connection, concurrency: int, inherited: list[Connection]) -> None:
    """Body of a worker: take batches from ``conn``, score them with ``concurrency`` calls in flight."""
    try:
        for other in inherited:  # the parent's ends: holding them would hide the parent's death from the others
            other.close()
        _forget_parent_state(client, concurrency)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        stopped: asyncio.Future[None] = loop.create_future()
        sem = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def one(batch: int, i: int, prompt: RenderedPrompt, method: ScoringMethod) -> None:
            fallback = None
            try:
                async with sem:
                    dist, fallback = await client._score_fresh(prompt, method)
            except Exception as exc:  # never leave the parent waiting for an item
                error = f"worker process: {one_line(exc)}"
                dist = AnswerDistribution.failure(prompt, method, error)
            conn.send(("result", batch, i, dist_to_json(dist), fallback.value if fallback else None))

        def start(batch: int, items: list[Item]) -> None:
            for item in items:
                task = loop.create_task(one(batch, *item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        def send_stats(batch: int) -> None:
            counters = client.stats.take()
            conn.send(("stats", batch, counters))

        def stop() -> None:
            if not stopped.done():
                stopped.set_result(None)

        def on_readable() -> None:
            try:
                while conn.poll():
                    message = conn.recv()
                    if message is None:
                        stop()
                        return
                    if message[0] == "score":
                        start(message[1], message[2])
                    elif message[0] == "stats":  # sent once every result is in: the counters are complete
                        send_stats(message[1])
            except (EOFError, OSError):  # the parent is gone
                stop()

        loop.add_reader(conn.fileno(), on_readable)
        loop.run_until_complete(stopped)
    except BaseException as exc:  # reported to the parent, which records the unanswered probes as failed
        with contextlib.suppress(Exception):
            conn.send(("error", one_line(exc)))
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        os._exit(0)


def _forget_parent_state(client: ModelClient, concurrency: int) -> None:
    """Drop what a forked worker must not share with its parent: HTTP clients, the disk cache, the pool.

    The parent's objects stay frozen (outside the garbage collector's sweeps): scanning them would copy every
    page they live on into this process.
    """
    try:
        from litellm.caching.llm_caching_handler import LLMClientCache

        from selfalign.models.litellm_env import import_litellm

        import_litellm().in_memory_llm_clients_cache = LLMClientCache()
    except ImportError:
        pass
    client.cache = None
    client.caller.reset()
    client._sem = {}
    client._pool = None
    client.stats.take()
    client.max_concurrency = concurrency
