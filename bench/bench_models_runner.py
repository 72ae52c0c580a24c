"""Runner efficiency: 1,000 probes at concurrency 32 against a loopback OpenAI-compatible server that takes
a fixed 100 ms per answer, through ModelClient -> LiteLLM -> HTTP. The ideal is 1000 x 0.1 s / 32 = 3.125 s.

The server runs in its own process (so it does not share the client's interpreter). Prints the ratio
ideal / measured (target >= 0.8), measured in one run.

    .venv/bin/python bench/bench_models_runner.py [--probes 1000] [--concurrency 32] [--delay 0.1]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfalign.models import ModelClient, RenderedPrompt
from selfalign.models.types import LETTERS

OPTIONS = ("Very important", "Rather important", "Not very important", "Not at all important")


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


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(base: str, args: argparse.Namespace, workers: int | None) -> tuple[float, float, int, int]:
    """(seconds, CPU seconds, ok results, worker processes) for one run of ``args.probes`` probes."""
    client = ModelClient("openai/bench", api_base=base, cache=False, max_concurrency=args.concurrency, workers=workers)
    client.score_many([probe(-i - 1) for i in range(args.concurrency)])  # connections, lazy imports
    prompts = [probe(i) for i in range(args.probes)]
    cpu0 = _cpu()
    start = time.perf_counter()
    results = client.score_many(prompts)
    elapsed = time.perf_counter() - start
    return elapsed, _cpu() - cpu0, sum(r.ok for r in results), client._workers_for(args.probes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.1)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "selfalign.models.loopback", "--delay", str(args.delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    ideal = args.probes * args.delay / args.concurrency
    load = os.getloadavg()[0]
    try:
        base = f"http://127.0.0.1:{int(server.stdout.readline().split()[1])}/v1"  # type: ignore[union-attr]
        warm = time.perf_counter()
        ModelClient("openai/bench", api_base=base, cache=False).score(probe(-1))  # first LiteLLM use
        print(f"first call (LiteLLM's lazy imports, not counted): {time.perf_counter() - warm:.2f} s")
        runs = [("one process", measure(base, args, 1)), ("default (worker processes)", measure(base, args, None))]
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"probes: {args.probes}, concurrency {args.concurrency}, server delay {args.delay * 1000:.0f} ms; "
        f"ideal {ideal:.3f} s; load average at start {load:.1f} on {os.cpu_count()} CPUs"
    )
    for name, (elapsed, cpu, ok, workers) in runs:
        print(
            f"{name:<28} {elapsed:6.2f} s, {workers} process(es), client CPU {cpu / args.probes * 1000:.2f} ms/call,"
            f" ok {ok}/{args.probes}: ratio {ideal / elapsed:.2f}"
        )
    print(f"RATIO ideal/measured = {ideal / runs[-1][1][0]:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
