"""How much work a spec is, after the runner's deduplication, and how long it should take.

    python bench/bench_runner_dedup.py paper                      # rows and distinct prompts per program and k
    python bench/bench_runner_dedup.py paper --measured runs/x    # + wall-time estimate from a measured run

The estimate multiplies the spec's distinct prompts per (program, k) by the mean model latency per distinct
prompt of the same (program, k) in the measured run table (rows answered from the model cache are left out),
and adds nothing for rows that share a prompt. With the embedded model (one call at a time) the sum of
latencies is the wall time of the model calls.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from selfalign.plan import plan_run, render_rows
from selfalign.runtable import load_run_table
from selfalign.specs import load_spec


def plan_counts(spec_name: str) -> pd.DataFrame:
    """Rows and distinct prompts of a spec per (program, k)."""
    started = time.perf_counter()
    plan = plan_run(load_spec(spec_name))
    render_rows(plan, plan.rows)
    elapsed = time.perf_counter() - started
    frame = pd.DataFrame([{**r.base, "prompt_sha256": r.base.get("prompt_sha256")} for r in plan.rows])
    first = frame.drop_duplicates(["model", "prompt_sha256"])
    counts = frame.groupby(["program", "k"]).size().rename("rows").to_frame()
    counts["distinct_prompts"] = first.groupby(["program", "k"]).size()
    counts = counts.fillna(0).astype(int)
    print(f"{spec_name}: {len(frame)} rows, {len(first)} distinct prompts (planned and rendered in {elapsed:.1f} s)")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="spec file or bundled name")
    parser.add_argument("--measured", help="a run folder whose latencies give the time per distinct prompt")
    args = parser.parse_args()
    counts = plan_counts(args.spec)
    if args.measured:
        table = load_run_table(args.measured)
        fresh = table[~table["cached"].astype(bool)].drop_duplicates(["model", "prompt_sha256"])
        latency = fresh.groupby(["program", "k"])["latency_s"].mean().rename("s_per_prompt")
        counts = counts.join(latency, how="left")
        if counts["s_per_prompt"].isna().any():
            missing = counts.index[counts["s_per_prompt"].isna()].tolist()
            print(f"no measurement for {missing}: using the largest measured time per prompt for them")
            counts["s_per_prompt"] = counts["s_per_prompt"].fillna(latency.max())
        counts["est_hours"] = counts["distinct_prompts"] * counts["s_per_prompt"] / 3600
        measured_wall = fresh["latency_s"].sum()
        print(f"measured: {len(fresh)} distinct prompts, {measured_wall:.0f} s of model time")
    print(counts.to_string())
    if "est_hours" in counts:
        print(f"estimated model time for {args.spec}: {counts['est_hours'].sum():.2f} h")


if __name__ == "__main__":
    main()
