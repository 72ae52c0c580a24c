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
        text=f"Question: Survey item {i}\nAnswer:", continuations=tuple(" " + o for o in OPTIONS),
        messages=({"role": "user", "content": question},), labels=tuple(LETTERS[:4]), options=OPTIONS,
    )


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.1)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "selfalign.models.loopback", "--delay", str(args.delay)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[1])  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}/v1"
        client = ModelClient("openai/bench", api_base=base, cache=False, max_concurrency=args.concurrency)
        warm = time.perf_counter()
        client.score_many([probe(-i - 1) for i in range(args.concurrency)])  # imports, connections
        warm = time.perf_counter() - warm
        client.stats = type(client.stats)()
        prompts = [probe(i) for i in range(args.probes)]
        load = os.getloadavg()[0]
        cpu0 = _cpu()
        start = time.perf_counter()
        results = client.score_many(prompts)
        elapsed = time.perf_counter() - start
        cpu = _cpu() - cpu0
        workers = client._workers_for(args.probes)
    finally:
        server.terminate()
        server.wait(10)
    ideal = args.probes * args.delay / args.concurrency
    ok = sum(r.ok for r in results)
    print(f"probes: {args.probes}, concurrency {args.concurrency}, server delay {args.delay * 1000:.0f} ms")
    print(f"warm-up ({args.concurrency} probes, first LiteLLM use): {warm:.2f} s (not counted)")
    print(f"measured: {elapsed:.2f} s; ideal: {ideal:.3f} s; ok: {ok}/{args.probes}; calls: {client.stats.calls}")
    print(f"client CPU: {cpu / args.probes * 1000:.2f} ms per call, over {workers} process(es); "
          f"machine load average at start: {load:.1f} on {os.cpu_count()} CPUs")
    print(f"RATIO ideal/measured = {ideal / elapsed:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
