"""Where each program's answers fall under each perturbation of a binary-protocol run: the share of answers on
the agree side, the share that take the option shown first, and what the constant answers would score.

Run: python evals/results/robustness/position_bias.py runs/robustness [--out evals/results/robustness/position_bias.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from selfalign.robustness import perturbation_order, with_perturbations
from selfalign.runtable import load_run_table


def position_bias(run_dir: Path) -> pd.DataFrame:
    """One row per (program, perturbation): answered rows, % on the agree side, % taking the first option shown."""
    table = with_perturbations(load_run_table(run_dir))
    table = table[table["ok"] & (table["protocol"] == "binary")].copy()
    table["first_shown"] = [json.loads(order)[0] for order in table["order_shown"]]
    table["agree"] = table["model_choice"] == "agree"
    table["takes_first"] = table["model_choice"] == table["first_shown"]
    out = (
        table.groupby(["program", "perturbation"])
        .agg(rows=("agree", "size"), agree_pct=("agree", "mean"), first_pct=("takes_first", "mean"))
        .reset_index()
    )
    out[["agree_pct", "first_pct"]] *= 100
    order = {p: i for i, p in enumerate(perturbation_order(out["perturbation"].unique()))}
    programs = {p: i for i, p in enumerate(dict.fromkeys(table["program"]))}
    return out.sort_values(["program", "perturbation"], key=lambda c: c.map(programs if c.name == "program" else order))


def to_markdown(frame: pd.DataFrame, majority_agrees: float) -> str:
    lines = [
        "# Where the answers fall",
        "",
        "Per program and perturbation: the share of answers on the agree side (yes, true) and the share that take "
        "the option shown first (agree, yes or true first, except under order=reversed). "
        f"The countries' majority agrees on {majority_agrees:.1f}% of these (country, question) pairs.",
        "",
        "| program | perturbation | rows | answers on the agree side % | answers taking the first option % |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.program} | {r.perturbation} | {r.rows} | {r.agree_pct:.1f} | {r.first_pct:.1f} |"
        for r in frame.itertuples()
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    table = load_run_table(args.run_dir)
    pairs = table.drop_duplicates(["country", "question_id"])
    text = to_markdown(position_bias(args.run_dir), float((pairs["country_majority"] == "agree").mean() * 100))
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
