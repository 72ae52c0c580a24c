"""Benchmark of ``selfalign optimize``: planning overhead without a model, and (``--run``) a cold default run.

    .venv/bin/python bench/bench_optimize.py            # prompt preparation for the search (seconds, no model)
    .venv/bin/python bench/bench_optimize.py --run EGY  # the default optimize on a fresh cache (minutes)

The first part renders and counts every prompt the config stage may ask for (the whole configuration grid on
all dev questions of one country), which is what the search spends outside model calls. The second runs
``selfalign optimize --country C`` with the default budget on an empty cache folder and reports wall time,
calls and seconds per call, with the machine's load average (other processes slow the embedded model).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def planning(country: str) -> None:
    from selfalign.loaders import load_survey
    from selfalign.optimize import Evaluator, Item, SearchSpace
    from selfalign.optimize.space import demonstrations_candidate
    from selfalign.splits import split_questions
    from selfalign.survey import Protocol

    survey = load_survey("wvs7")
    split = split_questions(survey)
    items = [Item(country, q) for q in split.dev if survey.has_answers(country, q)]
    evaluator = Evaluator(survey, Protocol.BINARY, frozenset(split.dev), client=None, budget=None)
    grid = [demonstrations_candidate(g) for g in SearchSpace().grid()]
    started = time.perf_counter()
    total = sum(evaluator.cost(c.key, c.build(), items) for c in grid)
    elapsed = time.perf_counter() - started
    print(f"planning: {len(grid)} configurations x {len(items)} dev questions of {country}: {total} distinct "
          f"prompts rendered and counted in {elapsed:.2f} s ({1e3 * elapsed / (len(grid) * len(items)):.2f} ms "
          "per prompt)")  # fmt: skip


def full_run(country: str, budget: int | None) -> None:
    from selfalign.optimize import DEFAULT_BUDGET, optimize

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = optimize(country, budget=budget or DEFAULT_BUDGET, cache_dir=cache, out=out, progress=True)
        elapsed = time.perf_counter() - started
    meta = result.meta
    calls = meta["calls_spent"] + meta["test_calls"]
    print(f"optimize {country} (budget {meta['budget']}, cold cache): {elapsed / 60:.1f} min wall, "
          f"search {meta['search_seconds']:.0f} s for {meta['calls_spent']} calls, test {meta['test_calls']} calls; "
          f"{elapsed / max(1, calls):.2f} s per call; load average at start {load:.1f}, at end "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    print(f"chosen: {meta['chosen']}; test agreement {100 * meta['test_score']['agreement']:.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--country", default="EGY")
    parser.add_argument("--run", metavar="COUNTRY", default=None, help="also time a cold default optimize run")
    parser.add_argument("--budget", type=int, default=None)
    args = parser.parse_args()
    planning(args.country)
    if args.run:
        full_run(args.run, args.budget)


if __name__ == "__main__":
    main()
