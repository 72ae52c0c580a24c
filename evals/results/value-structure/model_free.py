"""Model-free check of demonstration selection: copy the shown demonstrations' answers, no model at all.

For every (country, test question) pair of the bundled survey's seed-0 test split, all countries, the runner
plans and renders the probes of each demonstration program exactly as a run would (same demonstrations,
dev-question pool), without calling a model; :mod:`selfalign.references` then scores the copier that answers
what the shown demonstrations answered (binary: the majority of their sides; options: see that module).
Beside them, two references that show no demonstration:

- a constant answer (binary: always "agree"; options: the uniform guess, i.e. chance);
- the other countries' majority: the side (option) that most of the *other* countries' majorities took on the
  test question (ties: agree, or the first option in survey order). It uses the same information the
  correlation strategy uses about the test question (other countries' answers to it) but nothing about the
  target country.

Agreement is in percent with 95% cluster-bootstrap intervals over questions (:func:`selfalign.metrics.bootstrap_ci`);
the paired differences (``paired_difference``) compare the value-structure programs with their chrF++ twins.

Run (from the repository root, about a minute on 2 CPU cores)::

    python evals/results/value-structure/model_free.py --out evals/results/value-structure/model_free.md
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from selfalign.metrics import agreement, bootstrap_ci, js_similarity, paired_difference
from selfalign.plan import plan_run, render_rows
from selfalign.references import add_copy_columns
from selfalign.specs import parse_spec
from selfalign.survey import Protocol, Survey

PROGRAMS = (
    "self-align-correlation-no-battery",
    "self-align-chrf-no-battery",
    "self-align-correlation",
    "self-align-chrf",
)
PAIRS = (
    ("self-align-correlation-no-battery", "self-align-chrf-no-battery"),
    ("self-align-correlation", "self-align-chrf"),
)


def planned_table(protocol: str, survey_name: str, split_seed: int) -> tuple[pd.DataFrame, Survey]:
    """The rendered rows of every program on every country (test split), as a run table without model columns."""
    spec = parse_spec(
        {
            "name": f"model-free-{protocol}",
            "survey": survey_name,
            "protocol": protocol,
            "split": "test",
            "split_seed": split_seed,
            "grid": [{"programs": list(PROGRAMS), "k": [5], "countries": "all"}],
        },
        source="model_free.py",
    )
    plan = plan_run(spec)
    render_rows(plan, plan.rows)
    failed = [row.prepare_error for row in plan.rows if row.prepare_error]
    if failed:
        raise SystemExit(f"{len(failed)} prompts not built, e.g. {failed[0]}")
    table = pd.DataFrame([row.base for row in plan.rows]).assign(ok=True)
    return add_copy_columns(table, plan.survey), plan.survey


def _others_majority(survey: Survey, protocol: Protocol, country: str, qid: str) -> str:
    """The side or option most other countries' majorities took on ``qid``."""
    question = survey.question(qid)
    votes: Counter[str] = Counter()
    for other in survey.countries:
        if other != country and survey.has_answers(other, qid):
            if protocol is Protocol.BINARY:
                votes[str(survey.majority_side(other, qid))] += 1
            else:
                votes[survey.majority_option(other, qid)] += 1
    order = ("agree", "disagree") if protocol is Protocol.BINARY else question.option_codes
    return max(order, key=lambda code: (votes[code], -order.index(code)))


def references_without_demos(table: pd.DataFrame, survey: Survey, protocol: Protocol) -> pd.DataFrame:
    """Per (country, question) pair: agreement and JS of the constant answer and of the others' majority."""
    pairs = table.drop_duplicates(["country", "question_id"])
    rows = []
    for country, qid, codes_raw, shares_raw in zip(
        pairs["country"], pairs["question_id"], pairs["option_codes"], pairs["country_shares"], strict=True
    ):
        codes = json.loads(codes_raw)
        shares = [json.loads(shares_raw)[c] for c in codes]
        # always "agree", or the uniform guess
        constant = [1.0, 0.0] if protocol is Protocol.BINARY else [1.0 / len(codes)] * len(codes)
        majority = _others_majority(survey, protocol, country, qid)
        others = [1.0 if c == majority else 0.0 for c in codes]
        rows.append(
            {
                "country": country,
                "question_id": qid,
                "constant": agreement(constant, shares),
                "constant_js": js_similarity(constant, shares),
                "others": agreement(others, shares),
                "others_js": js_similarity(others, shares),
            }
        )
    return pd.DataFrame(rows)


def signed_against_absolute(survey_name: str, split_seed: int) -> str:
    """Binary protocol: the copier when the correlation strategy ranks by |r| instead of the signed r.

    With |r|, strongly *negatively* associated questions are shown too; copying their answers as shown is what
    a demonstration asks of a model, flipping them is what a model would have to infer.
    """
    from selfalign.loaders import load_survey
    from selfalign.retrieval import DemonstrationRetriever
    from selfalign.splits import split_questions

    survey = load_survey(survey_name)
    split = split_questions(survey, protocol="binary", seed=split_seed)
    retriever = DemonstrationRetriever(survey)
    pool = frozenset(split.dev)
    lines = [
        "### Signed or absolute association (binary protocol, copying the top 5)",
        "",
        "| ranking | battery excluded | battery allowed |",
        "|---|---|---|",
    ]
    results: dict[str, dict[bool, str]] = {}
    for exclude in (True, False):
        hits: dict[str, list[float]] = {"signed r (the strategy)": [], "abs(r), copied as shown": [],
                                        "abs(r), negatively associated ones flipped": []}  # fmt: skip
        clusters: list[str] = []
        for qid in split.test:
            for country in survey.countries:
                if not survey.has_answers(country, qid):
                    continue
                candidates = retriever.candidate_ids(qid, country, pool=pool, exclude_battery=exclude)
                scores = retriever.associations(qid, country)
                truth = survey.majority_side(country, qid)
                clusters.append(qid)
                for name, values in hits.items():
                    signed = name.startswith("signed")
                    top = sorted(candidates, key=lambda q: -scores[q] if signed else -abs(scores[q]))[:5]
                    agree = 0
                    for q in top:
                        side = survey.majority_side(country, q) == "agree"
                        agree += (not side) if name.endswith("flipped") and scores[q] < 0 else side
                    values.append(float(("agree" if agree >= 3 else "disagree") == truth))
        for name, values in hits.items():
            results.setdefault(name, {})[exclude] = _ci(pd.Series(values), pd.Series(clusters))
    for name, cells in results.items():
        lines.append(f"| {name} | {cells[True]} | {cells[False]} |")
    return "\n".join([*lines, ""])


def _ci(values: pd.Series, clusters: pd.Series, scale: float = 100.0, digits: int = 1) -> str:
    mean, lo, hi = bootstrap_ci(values.to_numpy(dtype=float) * scale, clusters.to_numpy())
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def summarize_protocol(protocol: str, survey_name: str, split_seed: int) -> str:
    """The Markdown section of one protocol."""
    started = time.perf_counter()
    table, survey = planned_table(protocol, survey_name, split_seed)
    proto = Protocol(protocol)
    n_pairs = table.drop_duplicates(["country", "question_id"]).shape[0]
    lines = [
        f"## Protocol {protocol}",
        "",
        f"{n_pairs:,} (country, test question) pairs: {table['country'].nunique()} countries, "
        f"{table['question_id'].nunique()} test questions (split seed {split_seed}); k = 5 demonstrations "
        f"from the {len(set(q for ids in table['demo_ids'] for q in json.loads(ids)))} dev questions used.",
        "",
        "| copy the answers of | agreement % [95% CI] | 1 - JS [95% CI] | pairs | uniform guesses |",
        "|---|---|---|---|---|",
    ]
    for program in PROGRAMS:
        rows = table[table["program"] == program]
        guesses = int((rows["copy_choice"] == "").sum())
        lines.append(
            f"| `{program}` | {_ci(rows['copy_agreement'], rows['question_id'])} | "
            f"{_ci(rows['copy_js_similarity'], rows['question_id'], 1.0, 3)} | {len(rows):,} | {guesses:,} |"
        )
    plain = references_without_demos(table, survey, proto)
    constant = "always agree" if proto is Protocol.BINARY else "uniform guess (chance)"
    lines.append(
        f"| no demonstration: {constant} | {_ci(plain['constant'], plain['question_id'])} | "
        f"{_ci(plain['constant_js'], plain['question_id'], 1.0, 3)} | {len(plain):,} | |"
    )
    lines.append(
        f"| no demonstration: the other countries' majority | {_ci(plain['others'], plain['question_id'])} | "
        f"{_ci(plain['others_js'], plain['question_id'], 1.0, 3)} | {len(plain):,} | |"
    )
    departs = table.merge(plain[["country", "question_id", "others"]], on=["country", "question_id"])
    departs = departs[departs["others"] < 1]
    n_departs = departs.drop_duplicates(["country", "question_id"]).shape[0]
    lines += [
        "",
        f"Where the country departs from the other countries' majority ({n_departs:,} pairs, "
        f"{100 * n_departs / len(plain):.1f}%; the others' majority scores {100 * departs['others'].mean():.1f} there, "
        "by definition):",
        "",
        "| copy the answers of | agreement % [95% CI] |",
        "|---|---|",
    ]
    for program in PROGRAMS:
        rows = departs[departs["program"] == program]
        lines.append(f"| `{program}` | {_ci(rows['copy_agreement'], rows['question_id'])} |")
    lines += ["", "| paired difference (agreement, pp) | mean [95% CI] | p |", "|---|---|---|"]
    for a, b in PAIRS:
        key = ["country", "question_id"]
        merged = table[table["program"] == a].merge(table[table["program"] == b], on=key, suffixes=("_a", "_b"))
        result = paired_difference(
            merged["copy_agreement_a"].to_numpy() * 100,
            merged["copy_agreement_b"].to_numpy() * 100,
            merged["question_id"].to_numpy(),
        )
        lines.append(
            f"| `{a}` - `{b}` | {result.mean_diff:+.1f} [{result.ci_low:+.1f}, {result.ci_high:+.1f}] | "
            f"{result.p_value:.2g} |"
        )
    if proto is Protocol.OPTIONS:
        lines += ["", "By scale of the test question (agreement %, copying):", ""]
        lines += ["| program | ordinal | nominal |", "|---|---|---|"]
        for program in PROGRAMS:
            rows = table[table["program"] == program]
            cells = {scale: _ci(r["copy_agreement"], r["question_id"]) for scale, r in rows.groupby("scale")}
            lines.append(f"| `{program}` | {cells.get('ordinal', '-')} | {cells.get('nominal', '-')} |")
    print(f"(protocol {protocol}: {time.perf_counter() - started:.0f} s)", flush=True)
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survey", default="wvs7")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--protocols", default="binary,options")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args()
    sections = [
        "# Model-free check: copying the demonstrations' answers",
        "",
        f"Survey {args.survey}, test split (seed {args.split_seed}), every country; written by "
        "`evals/results/value-structure/model_free.py`. Agreement with the country's majority (%), 1 - JS "
        "distance to its shares; intervals: 95% cluster bootstrap over questions.",
        "",
    ]
    for protocol in args.protocols.split(","):
        section = summarize_protocol(protocol.strip(), args.survey, args.split_seed)
        print(section, flush=True)
        sections.append(section)
        if protocol.strip() == "binary":
            section = signed_against_absolute(args.survey, args.split_seed)
            print(section, flush=True)
            sections.append(section)
    if args.out:
        args.out.write_text("\n".join(sections).rstrip() + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
