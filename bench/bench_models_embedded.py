"""Embedded scoring speed: probes per second on realistic probes (5 demonstrations, 4 options, ~250 tokens of
real WVS-7 questions) through the whole path (ModelClient -> LiteLLM -> selfalign provider -> llama.cpp),
against the bound: the time llama.cpp needs just to evaluate the same tokens (prompt and every option's
tokens) once, as one sequence, logits at the last position only. Target: ratio >= 0.8.

Each probe has other demonstrations, so no KV prefix is reused (the KV cache is cleared before each
measurement, for both sides). Bound and scoring alternate probe by probe, so load from other processes on a
shared machine hits both alike.

    .venv/bin/python bench/bench_models_embedded.py [--probes 24] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench_models_common import survey_probes  # also puts the repository on sys.path

from selfalign.models import ModelClient
from selfalign.models.embedded import get_embedded_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    probes = survey_probes(args.probes, k=5, n_options=4, seed=7)
    engine = get_embedded_model()
    client = ModelClient(cache=False)
    client.score(probes[0])  # load the model, import LiteLLM
    sequences = []
    for p in probes:
        prompt = engine.tokenize(p.text)
        options = [engine.tokenize(p.text + c)[len(prompt) :] for c in p.continuations]
        sequences.append(prompt + [t for o in options for t in o])
    n_tokens = statistics.mean(len(engine.tokenize(p.text)) for p in probes)

    def bound(tokens: list[int]) -> float:
        engine._reset_kv()
        start = time.perf_counter()
        for s in range(0, len(tokens), engine.n_batch):
            chunk = tokens[s : s + engine.n_batch]
            last = s + len(chunk) == len(tokens)
            engine._decode([(t, s + i, 0, last and i == len(chunk) - 1) for i, t in enumerate(chunk)])
        return time.perf_counter() - start

    def ours(p) -> float:
        engine._reset_kv()
        start = time.perf_counter()
        dist = client.score(p)
        elapsed = time.perf_counter() - start
        assert dist.ok, dist.error
        return elapsed

    def direct(p) -> float:
        engine._reset_kv()
        start = time.perf_counter()
        engine.score(p.text, p.continuations)
        return time.perf_counter() - start

    t_bound = t_ours = t_direct = 0.0
    for _ in range(args.rounds):
        for p, seq in zip(probes, sequences, strict=True):
            t_bound += bound(seq)
            t_ours += ours(p)
            t_direct += direct(p)
    n = args.probes * args.rounds
    print(
        f"probes: {args.probes} x {args.rounds} rounds; 5 demonstrations, 4 options; "
        f"mean prompt {n_tokens:.0f} tokens; {engine.n_vocab} vocabulary; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"bound (evaluate prompt + all option tokens once): {n / t_bound:.2f} probes/s")
    print(f"ModelClient.score via LiteLLM:                  {n / t_ours:.2f} probes/s")
    print(f"EmbeddedModel.score directly:                   {n / t_direct:.2f} probes/s")
    print(f"RATIO scoring/bound = {t_bound / t_ours:.2f} (target >= 0.8); direct/bound = {t_bound / t_direct:.2f}")


if __name__ == "__main__":
    main()
