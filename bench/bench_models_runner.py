"""Runner efficiency: 1,000 probes at concurrency 32 against a loopback OpenAI-compatible server that takes
a fixed 100 ms per answer, through ModelClient -> LiteLLM -> HTTP. The ideal is 1000 x 0.1 s / 32 = 3.125 s.

The server runs in its own process (so it does not share the client's interpreter). Measured in one run:

- one process: every call on one event loop (``workers=1``);
- worker pool, cold: the default for a batch this large (one forked worker per 4 calls in flight), the
  workers started inside the timed batch;
- worker pool, warm: the next batch on the same client (what every batch but the first of a long run sees);
- eval runner: ``selfalign.runner.run_spec`` (the code behind ``selfalign eval``) on a spec of 1,000 distinct
  probes (persona, 4 countries x 250 statements) with a fresh client and an empty result cache, as a first
  run has: prompt rendering, cache, JSONL log, metrics and run table included;
- batched completions: method ``completion`` (a base model behind a text-completions server), ``--batch-size``
  probes (each with its 4 options) per request, in one process; the server takes the same 100 ms per
  request whatever it holds (an engine batches on its accelerator), so its ideal is requests x 100 ms /
  calls in flight;
- runner, one process: the eval runner with ``workers=1`` (every call on one event loop), to tell whether the
  pool pays in a run;
- runner, completions: the eval runner with the batched-completions client.

Prints ideal / measured for each (target >= 0.8), and the CPU time each used (this process, its worker
processes, the server) per probe: divided by the CPUs, that is the shortest time the work could take on
this machine (Linux: read from /proc).

    .venv/bin/python bench/bench_models_runner.py [--probes 1000] [--concurrency 32] [--delay 0.1] [--workers N]
        [--batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfalign.models import ModelClient, RenderedPrompt, open_cache
from selfalign.models.types import LETTERS

OPTIONS = ("Very important", "Rather important", "Not very important", "Not at all important")
RUNNER_COUNTRIES = ("NGA", "DEU", "JPN", "MEX")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Row:
    """One measured configuration."""

    name: str
    probes: int
    seconds: float
    ok: int
    processes: str
    cpu_s: float  # this process and its workers
    server_cpu_s: float
    requests: int = 0  # HTTP requests, when fewer than probes (batched)


def probe(i: int) -> RenderedPrompt:
    lettered = "\n".join(f"{LETTERS[j]}. {o}" for j, o in enumerate(OPTIONS))
    question = f"Survey item {i}: how important is this aspect of life to you?\n{lettered}\nReply with the letter."
    return RenderedPrompt(
        text=f"Question: Survey item {i}\nAnswer:",
        continuations=tuple(" " + o for o in OPTIONS),
        messages=({"role": "user", "content": question},),
        labels=tuple(LETTERS[:4]),
        options=OPTIONS,
    )


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds used so far by a running process (0 where /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _own_cpu() -> float:
    """CPU seconds of this process and of its children already ended (closed worker pools)."""
    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime


def _cpu(server_pid: int, workers: Iterable[int | None]) -> tuple[float, float]:
    return _own_cpu() + sum(_proc_cpu(pid) for pid in workers), _proc_cpu(server_pid)


def timed(
    name: str, server_pid: int, run: Callable[[], tuple[int, int, str]], workers: Callable[[], list[int | None]]
) -> Row:
    """Time ``run`` (returning probes, ok results and a description of the processes) and count its CPU."""
    before = _cpu(server_pid, workers())
    start = time.perf_counter()
    probes, ok, processes = run()
    seconds = time.perf_counter() - start
    after = _cpu(server_pid, workers())
    return Row(name, probes, seconds, ok, processes, after[0] - before[0], after[1] - before[1])


def measure_client(base: str, server_pid: int, args: argparse.Namespace) -> list[Row]:
    """One process, then the worker pool cold and warm."""

    def batch(client: ModelClient, first: int) -> Callable[[], tuple[int, int, str]]:
        prompts = [probe(first + i) for i in range(args.probes)]

        def run() -> tuple[int, int, str]:
            ok = sum(r.ok for r in client.score_many(prompts))
            return args.probes, ok, f"{client._pool.size if client._pool else 1} process(es)"

        return run

    def pids(client: ModelClient) -> Callable[[], list[int | None]]:
        return lambda: client._pool.pids if client._pool is not None else []

    single = ModelClient("openai/bench", api_base=base, cache=False, max_concurrency=args.concurrency, workers=1)
    single.score_many([probe(-i - 1) for i in range(args.concurrency)])  # open the connections
    rows = [timed("one process", server_pid, batch(single, 0), pids(single))]
    pooled = ModelClient(
        "openai/bench", api_base=base, cache=False, max_concurrency=args.concurrency, workers=args.workers
    )
    pooled.score_many([probe(-i - 1) for i in range(args.concurrency)])  # small: still in this process
    rows.append(timed("worker pool, cold", server_pid, batch(pooled, 10_000), pids(pooled)))
    rows.append(timed("worker pool, warm", server_pid, batch(pooled, 20_000), pids(pooled)))
    pooled.close()
    return rows


def measure_batched(base: str, server_pid: int, args: argparse.Namespace) -> Row:
    """Method ``completion``: ``args.batch_size`` probes per request, in this process."""
    client = ModelClient(
        "openai/bench",
        api_base=base,
        cache=False,
        method="completion",
        batch_size=args.batch_size,
        max_concurrency=args.concurrency,
    )
    client.score_many([probe(-i - 1) for i in range(args.concurrency)])  # open the connections
    prompts = [probe(30_000 + i) for i in range(args.probes)]
    calls = client.stats.calls

    def run() -> tuple[int, int, str]:
        ok = sum(r.ok for r in client.score_many(prompts))
        return args.probes, ok, f"1 process, {args.batch_size} probes per request"

    row = timed("batched completions", server_pid, run, list)
    row.requests = client.stats.calls - calls
    return row


def measure_runner(
    base: str,
    server_pid: int,
    args: argparse.Namespace,
    method: str | None = None,
    name: str = "eval runner",
    workers: int | None = None,
) -> Row:
    """The eval runner on ``args.probes`` distinct persona probes (binary statements, 4 countries); ``workers``
    (default ``--workers``, else the client's default) for the chat method."""
    from selfalign.plan import plan_run
    from selfalign.runner import run_spec
    from selfalign.specs import parse_spec

    per_country = -(-args.probes // len(RUNNER_COUNTRIES))
    spec = parse_spec(
        {
            "name": "bench-runner",
            "split": "all",
            "limit": per_country,
            "models": ["openai/bench"],
            "grid": [{"programs": ["persona"], "k": [0], "countries": list(RUNNER_COUNTRIES)}],
        }
    )
    plan_run(spec)  # imports (DSPy) and the survey load: once per process, like LiteLLM's, not counted
    with tempfile.TemporaryDirectory() as out:

        def factory(model: str) -> ModelClient:  # a fresh client and an empty result cache, as a first run has
            cache = open_cache(Path(out) / "cache")
            pool = workers or args.workers
            settings = {"method": method, "batch_size": args.batch_size} if method else {"workers": pool}
            return ModelClient(model, api_base=base, cache=cache, max_concurrency=args.concurrency, **settings)

        def run() -> tuple[int, int, str]:  # the runner closes its client: the workers' CPU is then counted
            result = run_spec(spec, Path(out) / "run", client_factory=factory, progress=False)
            what = f"{args.batch_size} probes per request" if method else f"workers={workers or args.workers}"
            return len(result.table), int(result.table["ok"].sum()), what

        return timed(name, server_pid, run, list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: the client's)")
    parser.add_argument("--batch-size", type=int, default=8, help="probes per completions request")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "selfalign.models.loopback", "--delay", str(args.delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    load = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    try:
        base = f"http://127.0.0.1:{int(server.stdout.readline().split()[1])}/v1"  # type: ignore[union-attr]
        warm = time.perf_counter()
        ModelClient("openai/bench", api_base=base, cache=False).score(probe(-1))  # first LiteLLM use
        print(f"first call (LiteLLM's lazy imports, not counted): {time.perf_counter() - warm:.2f} s")
        rows = measure_client(base, server.pid, args)
        rows.append(measure_runner(base, server.pid, args))
        rows.append(measure_runner(base, server.pid, args, name="runner, one process", workers=1))
        rows.append(measure_batched(base, server.pid, args))
        rows.append(measure_runner(base, server.pid, args, "completion", "runner, completions"))
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"probes: {args.probes}, concurrency {args.concurrency}, server delay {args.delay * 1000:.0f} ms; "
        f"ideal {args.probes * args.delay / args.concurrency:.3f} s; load average at start {load:.1f} on {cpus} CPUs"
    )
    print(f"{'':<19} {'probes':>6} {'time':>7} {'ideal':>6} {'ratio':>6}   CPU per probe: client+workers, server")
    ratios = []
    for row in rows:
        batched = "completions" in row.name
        requests = row.requests or -(-row.probes // args.batch_size) if batched else row.probes
        ideal = -(-requests // args.concurrency) * args.delay if batched else row.probes * args.delay / args.concurrency
        ratios.append(ideal / row.seconds)
        floor = (row.cpu_s + row.server_cpu_s) / cpus
        print(
            f"{row.name:<19} {row.probes:>6} {row.seconds:6.2f}s {ideal:5.2f}s {ratios[-1]:6.2f}   "
            f"{row.cpu_s / row.probes * 1000:4.1f} ms, {row.server_cpu_s / row.probes * 1000:3.1f} ms "
            f"(all CPUs busy: >= {floor:.2f} s); {row.processes}, ok {row.ok}"
        )
    print(
        f"RATIO ideal/measured = {ratios[1]:.2f} pool cold, {ratios[2]:.2f} pool warm, {ratios[3]:.2f} eval runner"
        " (target >= 0.8)"
    )
    print(
        f"POOL: eval runner {rows[3].seconds:.2f} s with the default client (worker pool), {rows[4].seconds:.2f} s "
        f"in one process ({rows[4].seconds / rows[3].seconds:.2f}x); client alone: pool warm {rows[2].seconds:.2f} s, "
        f"one process {rows[0].seconds:.2f} s"
    )
    per_probe = [row.cpu_s / row.probes * 1000 for row in rows]
    print(
        f"CPU per probe in the client: {per_probe[0]:.1f} ms one process, {per_probe[2]:.1f} ms pool warm, "
        f"{per_probe[5]:.1f} ms batched completions ({args.batch_size} probes per request); eval runner "
        f"{per_probe[3]:.1f} ms (pool), {per_probe[4]:.1f} ms (one process), with batched completions "
        f"{per_probe[6]:.1f} ms"
    )


if __name__ == "__main__":
    main()
