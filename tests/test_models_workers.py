# ruff: noqa: F811
"""The worker-process pool that shares large hosted batches: kept between batches, never loses a probe."""

from __future__ import annotations

import math
import os
import signal

import pytest
from models_fixtures import loopback, make_prompt, result_cache  # noqa: F401

from selfalign.models import ModelClient
from selfalign.models.loopback import Reply
from selfalign.models.workers import can_fork, split_concurrency

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes need fork (Linux)")


def three_to_one(body, index):
    return Reply("A", (("A", math.log(0.6)), ("B", math.log(0.2))))


def prompts(tag: str, n: int):
    return [make_prompt(f"{tag} question {i}?") for i in range(n)]


def client(server, cache=False, **kw) -> ModelClient:
    return ModelClient("openai/pool-model", api_base=server.api_base, cache=cache, timeout_s=5.0, **kw)


def test_split_concurrency_shares_every_slot():
    assert split_concurrency(32, 8) == [4] * 8
    assert split_concurrency(10, 4) == [3, 3, 2, 2]
    assert split_concurrency(3, 8) == [1, 1, 1]  # never more workers than calls in flight
    assert sum(split_concurrency(7, 2)) == 7


def test_default_workers_follow_the_concurrency(loopback):
    server = loopback()
    assert client(server, max_concurrency=32)._workers_for(1000) == 8
    assert client(server, max_concurrency=8)._workers_for(1000) == 2
    assert client(server, max_concurrency=32)._workers_for(50) == 1  # small batches stay in this process
    assert client(server, max_concurrency=32, workers=1)._workers_for(1000) == 1
    assert client(server, max_concurrency=3, workers=8)._workers_for(1000) == 3


def test_pool_is_kept_between_batches_and_stopped_by_close(loopback, result_cache):
    server = loopback(policy=three_to_one)
    c = client(server, result_cache, workers=2, max_concurrency=8)
    first = c.score_many(prompts("First", 40))
    assert all(r.ok and r.probs == pytest.approx((0.75, 0.25, 0.0, 0.0)) for r in first)
    pool = c._pool
    assert pool is not None and pool.alive and pool.size == 2 and pool.concurrency == [4, 4]
    procs = list(pool._procs)
    second = c.score_many(prompts("Second", 10))
    assert c._pool is pool and all(r.ok for r in second)  # the same processes served the second batch
    assert server.request_count == 50 and c.stats.calls == 50 and c.stats.failures == 0
    assert len(result_cache) == 50  # the parent cached every result the workers sent
    c.close()
    assert c._pool is None and not any(p.is_alive() for p in procs)


def test_a_killed_worker_leaves_its_probes_failed_and_the_next_batch_recovers(loopback, result_cache):
    server = loopback(policy=three_to_one, delay_s=0.2)
    c = client(server, result_cache, workers=2, max_concurrency=4)
    batch = prompts("Killed", 24)
    seen: list[int] = []

    def kill_one_worker(i, dist):
        seen.append(i)
        if len(seen) == 2 and c._pool is not None:
            os.kill(c._pool.pids[0], signal.SIGKILL)

    results = c.score_many(batch, on_result=kill_one_worker)
    assert sorted(seen) == list(range(24)) and len(results) == 24  # every probe has a result
    failed = [r for r in results if not r.ok]
    assert failed and all("worker process" in (r.error or "") for r in failed)
    assert c.stats.failures == len(failed) and len(result_cache) == 24 - len(failed)  # failures never cached
    assert c._pool is None  # the broken pool is gone
    again = c.score_many(batch)
    assert all(r.ok for r in again)
    assert sum(not r.cached for r in again) == len(failed)  # only the failed probes were asked again
    c.close()


def test_an_error_in_the_callback_stops_the_workers(loopback):
    server = loopback(policy=three_to_one, delay_s=0.05)
    c = client(server, workers=2, max_concurrency=4)
    procs = []

    def boom(i, dist):
        if c._pool is not None:
            procs.extend(c._pool._procs)
            raise RuntimeError("the caller gave up")

    with pytest.raises(RuntimeError, match="gave up"):
        c.score_many(prompts("Boom", 20), on_result=boom)
    assert procs and not any(p.is_alive() for p in procs)
    assert c.score_many(prompts("After", 4))[0].ok  # a fresh pool (or this process) serves the next batch
    c.close()


def test_an_unexpected_error_in_a_worker_fails_only_that_probe(loopback, monkeypatch):
    server = loopback(policy=three_to_one)
    real = ModelClient._score_fresh

    async def explode_on_one(self, prompt, method):
        if "question 7?" in prompt.messages[-1]["content"]:
            raise RuntimeError("a bug met on one probe")
        return await real(self, prompt, method)

    monkeypatch.setattr(ModelClient, "_score_fresh", explode_on_one)  # the forked workers inherit it
    c = client(server, workers=2, max_concurrency=4)
    results = c.score_many(prompts("Bug", 30))
    assert "RuntimeError: a bug met on one probe" in (results[7].error or "")
    assert all(r.ok for k, r in enumerate(results) if k != 7)
    assert c._pool is not None and c._pool.alive and c.stats.failures == 1  # the pool carries on
    c.close()


ORPHAN_SCRIPT = """
import os, sys
from selfalign.models import ModelClient
from selfalign.models.loopback import LoopbackServer
from models_fixtures import make_prompt
server = LoopbackServer(delay_s=0.01, record=False).start()
client = ModelClient("openai/pool-model", api_base=server.api_base, cache=False, max_concurrency=4, workers=2)
client.score_many([make_prompt(f"Orphan question {i}?") for i in range(20)])
print(" ".join(str(pid) for pid in client._pool.pids), flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), 9)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("ending", ["exit", "kill"])
def test_workers_do_not_outlive_their_parent(ending, tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "SELFALIGN_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT, ending], capture_output=True, text=True, env=env, timeout=120
    )
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 2, done.stderr[-2000:]
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in pids)  # a killed parent's workers see their pipe close and stop


def test_batches_from_two_threads_take_turns_on_the_pool(loopback, result_cache):
    from concurrent.futures import ThreadPoolExecutor

    server = loopback(policy=three_to_one, delay_s=0.02)
    c = client(server, result_cache, workers=2, max_concurrency=4)
    c.score_many(prompts("Warm", 8))  # the pool exists before the threads start
    with ThreadPoolExecutor(2) as threads:
        a, b = threads.map(lambda tag: c.score_many(prompts(tag, 40)), ["Left", "Right"])
    assert all(r.ok for r in a + b) and server.request_count == 88
    assert c._pool is not None and c._pool.alive
    c.close()
