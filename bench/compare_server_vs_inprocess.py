"""How closely llama-cpp-python's OpenAI-compatible server (serving the embedded Gemma 3 270M, reached through
LiteLLM as an ``api_base`` with real top_logprobs) agrees with in-process scoring, on real WVS-7 probes.

The two do not see the same thing: in-process scoring reads the plain transcript and scores each option's
text as its continuation (length-normalised log-probability, softmax); the server sees the chat-templated
messages with lettered options (demonstrations as earlier turns answered with letters) and we read the
top-20 log-probabilities of its first answer token, renormalised over the letters. So they differ; this
reports by how much: argmax agreement, mean Jensen-Shannon distance (base 2, 0 = identical, 1 = disjoint),
and how much first-token mass the server put outside the letters.

    .venv/bin/python bench/compare_server_vs_inprocess.py [--probes 20] [--k 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from pathlib import Path

from bench_models_common import survey_probes  # also puts the repository on sys.path

from selfalign.models import ModelClient, open_cache
from selfalign.models.servers import LlamaCppServer, server_available


def js_distance(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    """Jensen-Shannon distance, base 2 (the square root of the divergence), in [0, 1]."""
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: tuple[float, ...]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, m, strict=True) if a > 0)

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--k", type=int, default=3, help="demonstrations per probe")
    args = parser.parse_args()
    if not server_available():
        raise SystemExit("llama_cpp.server is not importable: pip install 'llama-cpp-python[server]'")
    probes = survey_probes(args.probes, k=args.k, n_options=None, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        local = ModelClient(cache=open_cache(Path(tmp) / "local")).score_many(probes)
        with LlamaCppServer(n_ctx=4096) as server:
            remote_client = ModelClient(
                "openai/gemma", api_base=server.api_base, cache=False, timeout_s=300, max_concurrency=2
            )
            remote = remote_client.score_many(probes)
    rows, distances, agree, off = [], [], 0, []
    both = 0
    for p, a, b in zip(probes, local, remote, strict=True):
        if b.error is None:
            off.append(b.off_option_mass)
        if a.ok and b.ok:
            both += 1
            d = js_distance(a.probs, b.probs)
            distances.append(d)
            agree += a.argmax == b.argmax
            rows.append(
                f"{len(p.options)} opts  in-process {p.options[a.argmax][:22]:<22} "
                f"server {p.options[b.argmax][:22]:<22} JS {d:.3f}  off-option {b.off_option_mass:.2f}"
            )
        else:
            state = b.error or ("invalid: " + repr(b.raw_answer))
            rows.append(f"{len(p.options)} opts  server gave no distribution ({state})")
    print("\n".join(rows))
    print()
    print(
        f"probes: {len(probes)} real WVS-7 questions, {args.k} same-topic demonstrations (a country's majority answers)"
    )
    print(f"server distributions valid: {both}/{len(probes)}")
    if both:
        print(f"argmax agreement: {agree}/{both} = {agree / both:.0%}")
        print(f"mean JS distance (base 2): {statistics.mean(distances):.3f}")
    if off:
        print(f"server first-token mass outside the letters: mean {statistics.mean(off):.2f}")
    print(f"server: {remote_client.stats.calls} calls, {remote_client.stats.failures} failures")


if __name__ == "__main__":
    main()
