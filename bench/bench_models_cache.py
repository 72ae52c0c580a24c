"""Warm cache: a repeated run is served from the one disk cache, making zero model calls.

Three cases, each cold (empty cache) then warm (same probes, a new client on the same cache):
the embedded model on realistic probes, 1,000 probes against the loopback server (100 ms per answer,
concurrency 32), and the same 1,000 probes by method ``completion`` (8 probes per request; the cache is
still one entry per probe). Target: warm >= 50 times faster than cold, zero calls.

    .venv/bin/python bench/bench_models_cache.py [--embedded 20] [--hosted 1000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_models_common import survey_probes
from bench_models_runner import probe

from selfalign.models import ModelClient, open_cache


def run(make_client, prompts) -> tuple[float, ModelClient]:
    client = make_client()
    start = time.perf_counter()
    results = client.score_many(prompts)
    elapsed = time.perf_counter() - start
    assert all(r.error is None for r in results)
    return elapsed, client


def report(name: str, cold: tuple[float, ModelClient], warm: tuple[float, ModelClient], n: int) -> None:
    print(
        f"{name}: {n} probes; cold {cold[0]:.3f} s ({cold[1].stats.calls} calls); "
        f"warm {warm[0]:.4f} s ({warm[1].stats.calls} calls, {warm[1].stats.cache_hits} hits)"
    )
    print(f"  RATIO cold/warm = {cold[0] / warm[0]:.0f}x (target >= 50x), warm calls = {warm[1].stats.calls}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedded", type=int, default=20)
    parser.add_argument("--hosted", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = open_cache(Path(tmp) / "embedded")
        prompts = survey_probes(args.embedded, seed=11)
        ModelClient(cache=False).score(survey_probes(1, seed=99)[0])  # load the model outside the timing
        cold = run(lambda: ModelClient(cache=cache), prompts)
        warm = run(lambda: ModelClient(cache=cache), prompts)
        report("embedded model", cold, warm, len(prompts))

        server = subprocess.Popen(
            [sys.executable, "-m", "selfalign.models.loopback", "--delay", "0.1"], stdout=subprocess.PIPE, text=True
        )
        try:
            base = f"http://127.0.0.1:{int(server.stdout.readline().split()[1])}/v1"  # type: ignore[union-attr]
            hosted = open_cache(Path(tmp) / "hosted")
            ModelClient("openai/bench", api_base=base, cache=False).score(probe(-1))  # import LiteLLM
            prompts = [probe(i) for i in range(args.hosted)]

            def make() -> ModelClient:
                return ModelClient("openai/bench", api_base=base, cache=hosted, max_concurrency=32)

            cold = run(make, prompts)
            warm = run(make, prompts)
            report("loopback server (100 ms)", cold, warm, len(prompts))

            batched = open_cache(Path(tmp) / "batched")

            def make_batched() -> ModelClient:
                return ModelClient(
                    "openai/bench", api_base=base, cache=batched, max_concurrency=32, method="completion", batch_size=8
                )

            cold = run(make_batched, prompts)
            warm = run(make_batched, prompts)
            report("loopback server, batched completions", cold, warm, len(prompts))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
