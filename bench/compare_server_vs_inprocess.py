"""The same weights, the same numbers? The embedded Gemma 3 270M scored in-process and behind llama-cpp-python's
own OpenAI-compatible server on 127.0.0.1, on the probes a ``selfalign compare`` run sends.

The probes are the distinct prompts of a run plan (:func:`selfalign.plan.plan_run`, rendered by the programs
as a run renders them) over eight countries and every question of the survey, shuffled with ``--seed``: by
default the binary protocol (agree / disagree) with the zero-shot and persona programs; ``--protocol options``,
``--programs`` and ``-k`` give others (multi-token options, demonstrations).

Both sides score each option's text as the continuation of the plain transcript (length-normalised
log-probability, softmax over the options). In-process: :class:`selfalign.models.embedded.EmbeddedModel`.
Served: method ``completion`` through LiteLLM's text completions, with ``completion_logprobs`` ``grammar``
(the server tokenizes the text and generates exactly the continuation's tokens under a token grammar) or
``echo``. With ``--servers 2`` (the default) the probes are spread over two servers by an alias with two
``deployments`` (litellm.Router), two calls in flight per server. Prints argmax agreement and the mean
Jensen-Shannon distance (base 2, 0 = identical, 1 = disjoint), and how far the options' scores (mean token
log-probabilities) moved; the last line is ``argmax agreement X%, mean JS distance Y``.

What it costs: llama-cpp-python's server, asked for log-probabilities, computes 262k-wide logits at every
prompt position (``--logits_all``), takes their log-softmax over the whole context and sorts the vocabulary
in Python for every token it reports (0.3-0.8 s each on a busy 2-core machine). A binary probe (two
one-token options, ~45 prompt tokens) costs a few seconds; a multi-option probe with demonstrations
(``--protocol options -k 3``: ~15 reported tokens, ~230 prompt tokens) costs a minute or more here.

    .venv/bin/python bench/compare_server_vs_inprocess.py [--probes 200] [--protocol binary] [-k 0]
        [--programs zero-shot,persona] [--servers 2] [--style grammar]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import bench_models_common  # noqa: F401  (puts the repository on sys.path)

from selfalign.models import ModelClient, RenderedPrompt, open_cache
from selfalign.models.servers import LlamaCppServer, server_available


def js_distance(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    """Jensen-Shannon distance, base 2 (the square root of the divergence), in [0, 1]."""
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]

    def kl(x: tuple[float, ...]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, m, strict=True) if a > 0)

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


COUNTRIES = ("NGA", "DEU", "JPN", "USA", "BRA", "EGY", "IND", "MEX")


def run_probes(n: int, *, protocol: str, programs: list[str], k: int, seed: int) -> list[RenderedPrompt]:
    """``n`` distinct prompts of a run plan over :data:`COUNTRIES` and every question (shuffled with ``seed``)."""
    from selfalign.plan import plan_run, render_rows
    from selfalign.specs import parse_spec, validate_spec

    data = {
        "name": "bench-server-vs-inprocess",
        "survey": "wvs7",
        "protocol": protocol,
        "split": "all",
        "models": ["selfalign/gemma-3-270m"],
        "grid": [{"programs": programs, "k": [k], "countries": list(COUNTRIES)}],
    }
    plan = plan_run(validate_spec(parse_spec(data, source="bench")))
    render_rows(plan, plan.rows)
    distinct = {r.base["prompt_sha256"]: r.prompt for r in plan.rows if r.prompt is not None}
    prompts = [distinct[key] for key in sorted(distinct)]
    random.Random(seed).shuffle(prompts)
    if len(prompts) < n:
        raise SystemExit(f"the plan has {len(prompts)} distinct prompts, fewer than --probes {n}")
    return prompts[:n]


def served_client(servers: list[LlamaCppServer], folder: Path, style: str, batch_size: int) -> ModelClient:
    """A client of the server(s): one directly, several through an alias with one deployment each; two calls
    in flight per server (a llama-cpp-python server answers one at a time: the second waits, then starts at once)."""
    settings = {"method": "completion", "completion_logprobs": style, "batch_size": batch_size, "timeout_s": 1800}
    flight = 2 * len(servers)
    if len(servers) == 1:
        return ModelClient(
            "openai/gemma", api_base=servers[0].api_base, cache=False, max_concurrency=flight, max_retries=1, **settings
        )
    config = folder / "models.toml"
    rows = "".join(f'  {{ model = "openai/gemma", api_base = "{s.api_base}" }},\n' for s in servers)
    config.write_text(f"[models.gemma-farm]\ndeployments = [\n{rows}]\n", encoding="utf-8")
    return ModelClient("gemma-farm", config=config, cache=False, max_concurrency=flight, max_retries=1, **settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--protocol", choices=("binary", "options"), default="binary")
    parser.add_argument("--programs", default="zero-shot,persona", help="comma-separated programs")
    parser.add_argument("-k", "--k", type=int, default=0, help="demonstrations per probe (demonstration programs)")
    parser.add_argument("--servers", type=int, default=2, help="llama.cpp servers (several: an alias's deployments)")
    parser.add_argument("--style", choices=("grammar", "echo"), default="grammar", help="completion_logprobs")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="threads per server (default: CPUs / servers)")
    args = parser.parse_args()
    if not server_available():
        raise SystemExit("llama_cpp.server is not importable: pip install 'llama-cpp-python[server]'")
    programs = [p.strip() for p in args.programs.split(",") if p.strip()]
    probes = run_probes(args.probes, protocol=args.protocol, programs=programs, k=args.k, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        local = ModelClient(cache=open_cache(Path(tmp) / "local")).score_many(probes)
        local_s = time.perf_counter() - start
        threads = args.threads or max(1, (os.cpu_count() or 2) // args.servers)
        servers = [LlamaCppServer(n_ctx=args.n_ctx, n_threads=threads).start() for _ in range(args.servers)]
        try:
            client = served_client(servers, Path(tmp), args.style, args.batch_size)
            start = time.perf_counter()
            done = [0]

            def progress(_i: int, _dist: object) -> None:
                done[0] += 1
                if done[0] % 25 == 0:
                    print(f"  served {done[0]}/{len(probes)} after {time.perf_counter() - start:.0f} s", flush=True)

            remote = client.score_many(probes, on_result=progress)
            remote_s = time.perf_counter() - start
        finally:
            for server in servers:
                server.stop()
    distances, moved, agree, both, worst = [], [], 0, 0, (0.0, "")
    for p, a, b in zip(probes, local, remote, strict=True):
        if not (a.ok and b.ok):
            print(f"{len(p.options)} options: no pair ({a.error or b.error})")
            continue
        both += 1
        d = js_distance(a.probs, b.probs)
        distances.append(d)
        agree += a.argmax == b.argmax
        moved += [abs(x - y) for x, y in zip(a.extra["option_scores"], b.extra["option_scores"], strict=True)]
        if d > worst[0]:
            worst = (d, f"{p.options[a.argmax][:24]!r} vs {p.options[b.argmax][:24]!r}")
    print(
        f"probes: {len(probes)} distinct prompts of a run plan (protocol {args.protocol}, programs {args.programs}, "
        f"k {args.k}, {len(COUNTRIES)} countries; {min(len(p.options) for p in probes)}-"
        f"{max(len(p.options) for p in probes)} options); {args.servers} llama-cpp-python server(s), "
        f"completion_logprobs {args.style}, batch size {args.batch_size}"
    )
    print(f"in-process {local_s:.1f} s; served {remote_s:.1f} s ({client.stats.calls} requests)")
    print(f"pairs with both distributions valid: {both}/{len(probes)}")
    if moved:
        q = statistics.quantiles(moved, n=20)
        print(
            f"option scores (mean token log-probability) moved by: median {statistics.median(moved):.4f}, "
            f"95th percentile {q[-1]:.4f}, max {max(moved):.4f} nat"
        )
        print(f"largest JS distance {worst[0]:.4f} ({worst[1]})")
    if both:
        print(f"argmax agreement {agree / both:.1%}, mean JS distance {statistics.mean(distances):.4f}")
    else:
        print("argmax agreement n/a, mean JS distance n/a")


if __name__ == "__main__":
    main()
