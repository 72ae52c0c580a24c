"""A spec's cold run on the embedded model against its physical bound: every distinct token evaluated once.

On the embedded model a run's cost is prefill. The bound is the time llama.cpp needs to evaluate the spec's
tokens with optimal prefix sharing, once each: the nodes of a token trie over all distinct prompts (the shared
prompt of each probe, as ``EmbeddedModel.score`` splits it) plus every option token, at this machine's prefill
rate. The rate is measured in the same run, between the run's chunks of prompts, on a second llama.cpp context
(its own KV cache, so the run's prefix sharing is undisturbed): distinct prompts of the spec evaluated fresh,
whole (batches of up to 512 tokens), logits at the last position only.

The spec (or the stated sub-spec: ``--countries`` keeps only those countries in every grid, ``--limit`` at
most that many test questions per country) runs cold through ``selfalign.runner.run_spec`` into a temporary
folder with its own cache. "Measured" is the wall time spent in the model client's ``score_many`` (the model
calls, with the runner's per-row logging; rate samples excluded). LiteLLM is imported before the run (about
3 s, once per process: a library loading, not a model call; the time is printed); so is the runner's ordering
of the prompts (``ModelClient.order``: each prompt tokenized once, under a second on the sub-spec), which
comes before the first model call. The last line is ``RATIO bound/measured = X`` (target >= 0.8). The figures
also show the tokens the schedule evaluates (``selfalign.models.embedded.plan_prefill`` in the runner's order,
``EmbeddedModel.order``) and what reusing whole 128-token blocks only (the scheme before) would have evaluated.

The paper's eight k-curve countries, 30 test questions each (about 5 minutes on 2 cores):

    .venv/bin/python bench/bench_eval_bound.py paper --countries USA,DEU,NGA,EGY,JPN,BRA,IND,RUS --limit 30

The whole paper spec (about 20 minutes): ``.venv/bin/python bench/bench_eval_bound.py paper``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfalign.errors import SelfAlignError
from selfalign.models.embedded import BLOCK_TOKENS, EmbeddedModel, common_prefix, get_embedded_model, plan_prefill
from selfalign.models.litellm_env import import_litellm
from selfalign.runner import default_client_factory, plan_run, render_rows, run_spec
from selfalign.specs import load_spec, parse_spec, spec_path


def sub_spec(name: str, countries: list[str], limit: int | None) -> Any:
    """The spec, or the sub-spec whose grids keep only ``countries`` and (``limit``) that many test questions
    per country."""
    if not countries and limit is None:
        return load_spec(name)
    data = tomllib.loads(spec_path(name).read_text(encoding="utf-8"))
    stem = data.get("name", Path(name).stem)
    if countries:
        grids = data["grid"] if isinstance(data["grid"], list) else [data["grid"]]
        for grid in grids:
            listed = grid.get("countries", "all")
            grid["countries"] = countries if listed == "all" else [c for c in listed if c in countries]
        data["grid"] = [g for g in grids if g["countries"]]
        stem += f"-{len(countries)}-countries"
    if limit is not None:
        data["limit"] = limit
        stem += f"-limit-{limit}"
    data["name"] = stem
    return parse_spec(data, source=str(spec_path(name)))


def whole_block_reuse(cached: list[int], tokens: list[int]) -> int:
    """Tokens the previous scheme reused: whole 128-token blocks of the previous prompt only."""
    common = common_prefix(cached[: (len(cached) // BLOCK_TOKENS) * BLOCK_TOKENS], tokens)
    return min(common // BLOCK_TOKENS, (len(tokens) - 1) // BLOCK_TOKENS) * BLOCK_TOKENS


class RateMeter:
    """llama.cpp's prefill rate on this machine, sampled between the run's chunks on a second context."""

    def __init__(self, prompts: list[list[int]], tokens_per_sample: int, seed: int = 0) -> None:
        self.engine = EmbeddedModel()
        self.prompts = prompts[:]
        random.Random(seed).shuffle(self.prompts)
        self.tokens_per_sample = tokens_per_sample
        self.next = 0
        self.tokens = 0
        self.seconds = 0.0

    def sample(self) -> None:
        done = 0
        while done < self.tokens_per_sample:
            tokens = self.prompts[self.next % len(self.prompts)]
            self.next += 1
            self.engine._reset_kv()
            start = time.perf_counter()
            for s in range(0, len(tokens), self.engine.n_batch):
                chunk = tokens[s : s + self.engine.n_batch]
                last = s + len(chunk) == len(tokens)
                self.engine._decode([(t, s + i, 0, last and i == len(chunk) - 1) for i, t in enumerate(chunk)])
            self.seconds += time.perf_counter() - start
            self.tokens += len(tokens)
            done += len(tokens)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


class TimedClient:
    """A model client whose ``score_many`` calls are timed (a rate sample runs before each, untimed)."""

    def __init__(self, client: Any, meter: RateMeter, totals: dict[str, float]) -> None:
        self.client = client
        self.meter = meter
        self.totals = totals
        self.max_concurrency = client.max_concurrency
        self.stats = client.stats
        self.order = client.order

    def score_many(self, prompts: list[Any], on_result: Any = None) -> list[Any]:
        self.meter.sample()

        def counted(i: int, dist: Any) -> None:
            self.totals["evaluated"] += dist.extra.get("prompt_tokens", 0) - dist.extra.get("reused_tokens", 0)
            if on_result is not None:
                on_result(i, dist)

        start = time.perf_counter()
        out = self.client.score_many(prompts, on_result=counted)
        self.totals["model_s"] += time.perf_counter() - start
        self.totals["calls"] += len(prompts)
        return out

    def close(self) -> None:
        self.client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="a bundled spec name or a spec file (its models: the embedded one)")
    parser.add_argument("--countries", default="", help="comma-separated: run the sub-spec of these countries")
    parser.add_argument("--limit", type=int, default=None, help="at most this many test questions per country")
    parser.add_argument("--rate-tokens", type=int, default=300, help="prefill-rate tokens sampled per chunk")
    args = parser.parse_args()
    countries = [c.strip() for c in args.countries.split(",") if c.strip()]
    started = time.perf_counter()
    try:  # an unknown spec, country or bad spec value: its one-line message, before any model call
        spec = sub_spec(args.spec, countries, args.limit)
        plan = plan_run(spec)
    except SelfAlignError as exc:
        raise SystemExit(f"error: {exc}") from None
    render_rows(plan, plan.rows)
    distinct = {r.base["prompt_sha256"]: r.prompt for r in plan.rows if r.prompt is not None}
    by_text = sorted(distinct.values(), key=lambda p: p.text)
    engine = get_embedded_model()
    prompts = [by_text[i] for i in engine.order([p.text for p in by_text])]  # the runner's order, cold
    planned_s = time.perf_counter() - started

    totals = {"model_s": 0.0, "engine_s": 0.0, "calls": 0, "evaluated": 0}
    split = [engine.split_prompt(p.text, p.continuations) for p in prompts]
    tokens = [prefix for prefix, _ in split]
    option_tokens = sum(len(o) for _, options in split for o in options)
    no_sharing = sum(map(len, tokens))
    by_tokens = sorted(tokens)
    trie = sum(len(b) - common_prefix(a, b) for a, b in zip([[], *by_tokens], by_tokens, strict=False))
    schedule = sum(len(b) - plan_prefill(a, b)[0] for a, b in zip([[], *tokens], tokens, strict=False))
    blocks = sum(len(b) - whole_block_reuse(a, b) for a, b in zip([[], *tokens], tokens, strict=False))
    multi = sum(len(o) for _, options in split if max(map(len, options)) > 1 for o in options)
    load_before = os.getloadavg()
    print(
        f"spec {spec.name}: {plan.n_rows} rows, {len(prompts)} distinct prompts (planned, rendered and ordered "
        f"in {planned_s:.1f} s); {os.cpu_count()} CPUs, load average {load_before[0]:.2f} {load_before[1]:.2f}"
    )
    print(f"prompt tokens without sharing:            {no_sharing:>9,}")
    print(f"with optimal sharing (token-trie nodes):  {trie:>9,} ({trie / no_sharing:.3f} of that)")
    print(f"option tokens:                            {option_tokens:>9,} ({multi:,} in multi-token option sets)")
    print(f"this schedule evaluates (plan_prefill):   {schedule:>9,} ({schedule / trie:.3f} x the trie)")
    print(f"whole 128-block reuse would evaluate:     {blocks:>9,} ({blocks / trie:.3f} x the trie)")

    engine_score = engine.score

    def timed_score(text: str, continuations: Any) -> Any:
        start = time.perf_counter()
        try:
            return engine_score(text, continuations)
        finally:
            totals["engine_s"] += time.perf_counter() - start

    engine.score = timed_score  # type: ignore[method-assign]  # the provider's calls reach this engine
    import_started = time.perf_counter()
    import_litellm()
    print(f"LiteLLM imported in {time.perf_counter() - import_started:.1f} s (before the run, not timed)")
    meter = RateMeter(tokens, args.rate_tokens)
    meter.sample()  # warm both contexts' buffers before timing
    meter.tokens, meter.seconds = 0, 0.0
    with tempfile.TemporaryDirectory(prefix="bench-eval-bound-") as tmp:
        make = default_client_factory(Path(tmp) / "cache")
        run_started = time.perf_counter()
        result = run_spec(
            spec, Path(tmp) / "run", client_factory=lambda m: TimedClient(make(m), meter, totals), progress=False
        )
        run_s = time.perf_counter() - run_started
    load_after = os.getloadavg()
    bound = (trie + option_tokens) / meter.rate
    print(
        f"prefill rate: {meter.rate:.1f} tokens/s ({meter.tokens:,} tokens in {meter.seconds:.1f} s, sampled "
        f"between the run's {totals['calls'] // 32 + 1} chunks)"
    )
    print(f"bound = (trie nodes + option tokens) / rate = {bound:.1f} s")
    print(
        f"run: {result.n_done} rows, {result.n_model_calls} model calls, {result.n_failed} failed; "
        f"model calls {totals['model_s']:.1f} s ({int(totals['evaluated']):,} prompt tokens evaluated, "
        f"{totals['evaluated'] / totals['model_s']:.1f} tokens/s), of which {totals['engine_s']:.1f} s in "
        f"EmbeddedModel.score; run_spec {run_s:.1f} s in all; "
        f"load average after {load_after[0]:.2f} {load_after[1]:.2f}"
    )
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}")
    print(f"RATIO bound/measured = {bound / totals['model_s']:.2f}")


if __name__ == "__main__":
    main()
