"""Runner efficiency: 1,000 probes at concurrency 32 against a loopback OpenAI-compatible server that takes
a fixed 100 ms per answer, through ModelClient -> LiteLLM -> HTTP. The ideal is 1000 x 0.1 s / 32 = 3.125 s.

The server runs in its own process (so it does not share the client's interpreter). Measured in one run:

- one process: every call on one event loop (``workers=1``);
- worker pool, cold: the default for a batch this large (one forked worker per 4 calls in flight), the
  workers started inside the timed batch;
- worker pool, warm: the next batch on the same client (what every batch but the first of a long run sees);
- eval runner: ``selfalign.runner.run_spec`` (the code behind ``selfalign eval``) on a spec of 1,000 distinct
  probes (persona, 4 countries x 250 statements), with its prompt rendering, JSONL log and run table, on a
  fresh client (so the pool starts inside the run).

Prints ideal / measured for each (target >= 0.8).

    .venv/bin/python bench/bench_models_runner.py [--probes 1000] [--concurrency 32] [--delay 0.1] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfalign.models import ModelClient, RenderedPrompt, open_cache
from selfalign.models.types import LETTERS

OPTIONS = ("Very important", "Rather important", "Not very important", "Not at all important")
RUNNER_COUNTRIES = ("NGA", "DEU", "JPN", "MEX")


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


def timed_batch(client: ModelClient, first: int, n: int) -> tuple[float, int]:
    """(seconds, ok results) for ``n`` fresh probes numbered from ``first``."""
    prompts = [probe(first + i) for i in range(n)]
    start = time.perf_counter()
    results = client.score_many(prompts)
    return time.perf_counter() - start, sum(r.ok for r in results)


def measure_client(base: str, args: argparse.Namespace) -> list[tuple[str, float, int, int, int]]:
    """(name, seconds, ok, processes, probes) for one process, then the pool cold and warm."""
    rows = []
    single = ModelClient("openai/bench", api_base=base, cache=False, max_concurrency=args.concurrency, workers=1)
    single.score_many([probe(-i - 1) for i in range(args.concurrency)])  # open the connections
    rows.append(("one process", *timed_batch(single, 0, args.probes), 1, args.probes))
    pooled = ModelClient(
        "openai/bench", api_base=base, cache=False, max_concurrency=args.concurrency, workers=args.workers
    )
    pooled.score_many([probe(-i - 1) for i in range(args.concurrency)])  # small: still in this process
    elapsed, ok = timed_batch(pooled, 10_000, args.probes)
    size = pooled._pool.size if pooled._pool is not None else 1
    rows.append(("worker pool, cold", elapsed, ok, size, args.probes))
    rows.append(("worker pool, warm", *timed_batch(pooled, 20_000, args.probes), size, args.probes))
    pooled.close()
    return rows


def measure_runner(base: str, args: argparse.Namespace) -> tuple[str, float, int, int, int]:
    """The eval runner on ``args.probes`` distinct persona probes (binary statements, 4 countries)."""
    from selfalign.runner import plan_run, run_spec
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
            return ModelClient(
                model, api_base=base, cache=cache, max_concurrency=args.concurrency, workers=args.workers
            )

        start = time.perf_counter()
        result = run_spec(spec, Path(out) / "run", client_factory=factory, progress=False)
        elapsed = time.perf_counter() - start
    return ("eval runner", elapsed, int(result.table["ok"].sum()), 0, len(result.table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: the client's)")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "selfalign.models.loopback", "--delay", str(args.delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    load = os.getloadavg()[0]
    try:
        base = f"http://127.0.0.1:{int(server.stdout.readline().split()[1])}/v1"  # type: ignore[union-attr]
        warm = time.perf_counter()
        ModelClient("openai/bench", api_base=base, cache=False).score(probe(-1))  # first LiteLLM use
        print(f"first call (LiteLLM's lazy imports, not counted): {time.perf_counter() - warm:.2f} s")
        rows = measure_client(base, args)
        rows.append(measure_runner(base, args))
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"probes: {args.probes}, concurrency {args.concurrency}, server delay {args.delay * 1000:.0f} ms; "
        f"ideal {args.probes * args.delay / args.concurrency:.3f} s; load average at start {load:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    ratios = []
    for name, elapsed, ok, processes, n in rows:
        ideal = n * args.delay / args.concurrency
        ratios.append(ideal / elapsed)
        where = f"{processes} process(es)" if processes else "default client"
        print(
            f"{name:<20} {n:>5} probes {elapsed:6.2f} s (ideal {ideal:.2f} s), {where:<16} ok {ok:>5}: "
            f"ratio {ratios[-1]:.2f}"
        )
    print(
        f"RATIO ideal/measured = {ratios[1]:.2f} pool cold, {ratios[2]:.2f} pool warm, {ratios[3]:.2f} eval runner"
        " (target >= 0.8)"
    )


if __name__ == "__main__":
    main()
