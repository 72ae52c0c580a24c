"""Model-free references for a binary-protocol run: what copying the demonstrations' answers would score.

For every self-alignment row of the run table, using the demonstrations the model was shown (`demo_ids`) and
the country's real answers to them:
- copy-nearest: answer the test statement with the majority side of the demonstration nearest the test
  question (the last one shown under order "similar_last");
- demo-vote: answer with the side most of the k demonstrations took (ties: agree);
- always-agree: answer "agree" to everything.
Also the share of rows where the model answered "agree", against the share where the country's majority did.

Run: python evals/results/paper/baselines.py runs/paper [--out evals/results/paper/baselines.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from selfalign.loaders import load_survey
from selfalign.runtable import load_run_table


def baselines(run_dir: Path) -> pd.DataFrame:
    """One row per (program, k): model agreement and the model-free references, in percent."""
    table = load_run_table(run_dir)
    table = table[table["ok"] & (table["protocol"] == "binary")]
    survey = load_survey(str(table["survey"].iloc[0]))
    rows = []
    for (program, k), group in table.groupby(["program", "k"]):
        nearest, vote = [], []
        for country, majority, demo_ids in zip(
            group["country"], group["country_majority"], group["demo_ids"], strict=True
        ):
            ids = json.loads(demo_ids) if isinstance(demo_ids, str) else list(demo_ids)
            if not ids:
                continue
            sides = [survey.majority_side(country, qid) for qid in ids]
            nearest.append(sides[-1] == majority)
            agree = sum(side == "agree" for side in sides)
            vote.append(("agree" if agree * 2 >= len(sides) else "disagree") == majority)
        rows.append(
            {
                "program": program,
                "k": int(k),
                "rows": len(group),
                "model agreement %": 100 * group["agreement"].mean(),
                "copy-nearest %": 100 * sum(nearest) / len(nearest) if nearest else float("nan"),
                "demo-vote %": 100 * sum(vote) / len(vote) if vote else float("nan"),
                "always-agree %": 100 * (group["country_majority"] == "agree").mean(),
                "model says agree %": 100 * (group["model_choice"] == "agree").mean(),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    frame = baselines(args.run_dir).round(1)
    text = frame.to_markdown(index=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
