"""Tables of the value-structure evaluation: every program, its model-free reference, the paired differences.

Reads the run tables of ``selfalign eval evals/value-structure.toml`` (binary protocol) and, when given,
``selfalign eval evals/value-structure-options.toml`` (options protocol), and writes one Markdown file with

- per program: agreement with the country's majority (%) and 1 - JS distance, each with its 95% cluster
  bootstrap interval over questions; beside it what copying its shown demonstrations would score with no model
  (:mod:`selfalign.references`) and the paired difference model - copying; the share of probes the model
  answered "agree" (binary);
- the references that show no demonstration: a constant "agree" (binary) or a uniform guess (options), and the
  other countries' majority (agreement) and mean answer distribution (1 - JS), both without the target country;
- the paired differences the issue asks for (:func:`selfalign.metrics.compare_to_baseline`: pp of agreement or
  1 - JS, 95% cluster-bootstrap interval over questions, sign-flip permutation p-value), and, for the program
  learned on 28 countries only, the same split into the 29 countries it never saw and the 28 it saw.

Run (a few minutes on 2 CPU cores, no model)::

    python evals/results/value-structure/summarize.py runs/value-structure --options runs/value-structure-options \\
        --out evals/results/value-structure/results.md
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from selfalign.errors import SelfAlignError
from selfalign.loaders import load_survey
from selfalign.metrics import bootstrap_ci, compare_to_baseline, js_similarity
from selfalign.plan import country_shares
from selfalign.references import add_copy_columns, summarize_copying
from selfalign.runtable import load_run_table
from selfalign.survey import Protocol, Survey

HELD_OUT_PROGRAM = "compiled:learned-28-gemma-3-270m-binary"
BINARY_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("target 1", "self-align-correlation-no-battery", "self-align-chrf-no-battery"),
    ("target 2", "compiled:learned-gemma-3-270m-binary", "self-align-chrf"),
    ("", "self-align-correlation", "self-align-chrf"),
    ("", "compiled:learned-gemma-3-270m-binary", "self-align-correlation"),
    ("", "compiled:learned-no-battery-gemma-3-270m-binary", "self-align-chrf-no-battery"),
    ("", "compiled:learned-no-battery-gemma-3-270m-binary", "self-align-chrf"),
    ("", "compiled:learned-no-battery-gemma-3-270m-binary", "self-align-correlation-no-battery"),
    ("", HELD_OUT_PROGRAM, "self-align-chrf"),
    ("", HELD_OUT_PROGRAM, "compiled:learned-gemma-3-270m-binary"),
    ("", "self-align-chrf", "zero-shot"),
    ("", "compiled:learned-gemma-3-270m-binary", "zero-shot"),
)
OPTIONS_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("target 3", "self-align-concordance", "self-align-chrf"),
    ("target 3", "self-align-concordance-same-options", "self-align-chrf"),
    ("target 3", "self-align-learned-options", "self-align-chrf"),
    ("", "self-align-correlation", "self-align-chrf"),
    ("", "self-align-learned-options", "self-align-correlation"),
    ("", "self-align-concordance", "self-align-correlation"),
    ("", "self-align-concordance-same-options", "self-align-concordance"),
    ("", "self-align-chrf", "zero-shot"),
)


def _ci(mean: float, lo: float, hi: float, digits: int = 1) -> str:
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _signed(mean: float, lo: float, hi: float, digits: int = 1) -> str:
    return f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def others_majority(survey: Survey, protocol: Protocol, country: str, qid: str) -> str:
    """The side (option) most of the *other* countries' majorities took on ``qid`` (ties: agree / first)."""
    question = survey.question(qid)
    votes: Counter[str] = Counter()
    for other in survey.countries:
        if other != country and survey.has_answers(other, qid):
            key = (
                survey.majority_side(other, qid) if protocol is Protocol.BINARY else survey.majority_option(other, qid)
            )
            votes[str(key)] += 1
    order = ("agree", "disagree") if protocol is Protocol.BINARY else question.option_codes
    return max(order, key=lambda code: (votes[code], -order.index(code)))


def others_mean(survey: Survey, protocol: Protocol, country: str, qid: str) -> np.ndarray:
    """The mean answer distribution of the *other* countries on ``qid`` (the survey's countries that answered
    it, as for :func:`others_majority`), over the protocol's sides or options, renormalised."""
    others = [
        list(country_shares(survey, protocol, other, qid).values())
        for other in survey.countries
        if other != country and survey.has_answers(other, qid)
    ]
    mean = np.mean(np.array(others, dtype=float), axis=0)
    return mean / mean.sum()


def _references(table: pd.DataFrame, survey: Survey, protocol: Protocol) -> list[tuple[str, str, str]]:
    """(label, agreement, 1 - JS) of the references that show no demonstration, on one program's probes."""
    probes = table.drop_duplicates(["country", "question_id"])
    clusters = probes["question_id"].to_numpy()
    keys = list(zip(probes["country"], probes["question_id"], strict=True))
    shares = [json.loads(s) for s in probes["country_shares"]]
    truth = [np.array(list(share.values()), dtype=float) for share in shares]
    rows = []
    if protocol is Protocol.BINARY:
        agree = bootstrap_ci(100.0 * np.array([share["agree"] >= share["disagree"] for share in shares]), clusters)
        js = bootstrap_ci(np.array([js_similarity([1.0, 0.0], q) for q in truth]), clusters)
        rows.append(("no demonstration: always agree", _ci(*agree), _ci(*js, digits=3)))
    else:
        chance = bootstrap_ci(100.0 * np.array([1.0 / len(q) for q in truth]), clusters)
        js = bootstrap_ci(np.array([js_similarity(np.full(len(q), 1.0 / len(q)), q) for q in truth]), clusters)
        rows.append(("no demonstration: uniform guess (chance)", _ci(*chance), _ci(*js, digits=3)))
    majority = [
        share[others_majority(survey, protocol, country, qid)] >= max(share.values()) - 1e-12
        for (country, qid), share in zip(keys, shares, strict=True)
    ]
    world = [
        js_similarity(others_mean(survey, protocol, country, qid), q)
        for (country, qid), q in zip(keys, truth, strict=True)
    ]
    rows.append(
        (
            "no demonstration: the other countries' majority (agreement) and mean distribution (1 - JS)",
            _ci(*bootstrap_ci(100.0 * np.array(majority), clusters)),
            _ci(*bootstrap_ci(np.array(world), clusters), digits=3),
        )
    )
    return rows


def program_table(table: pd.DataFrame, survey: Survey, protocol: Protocol) -> list[str]:
    """One line per program: model, copying, model - copying, 1 - JS, answers 'agree'."""
    ok = table[table["ok"].fillna(False).astype(bool)]
    copying = summarize_copying(ok, ["program"], survey).set_index("program")
    head = "| program | probes | agreement % | copying its demonstrations, no model % | model - copying (pp) | 1 - JS |"
    if protocol is Protocol.BINARY:
        head += " model answers agree |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for program, frame in ok.groupby("program", sort=False):
        clusters = frame["question_id"].to_numpy()
        agree = bootstrap_ci(100.0 * frame["agreement"].to_numpy(dtype=float), clusters)
        js = bootstrap_ci(frame["js_similarity"].to_numpy(dtype=float), clusters)
        c = copying.loc[program]
        if np.isnan(c["copy_agreement_mean"]):
            copy, diff = "", ""
        else:
            copy = _ci(c["copy_agreement_mean"], c["copy_agreement_ci_low"], c["copy_agreement_ci_high"])
            diff = _signed(c["model_vs_copy"], c["model_vs_copy_ci_low"], c["model_vs_copy_ci_high"])
        line = f"| `{program}` | {len(frame):,} | {_ci(*agree)} | {copy} | {diff} | {_ci(*js, digits=3)} |"
        if protocol is Protocol.BINARY:
            line += f" {100 * (frame['model_choice'] == 'agree').mean():.1f}% |"
        lines.append(line)
    for label, agree, js in _references(ok, survey, protocol):
        lines.append(f"| {label} | | {agree} | | | {js} |" + (" |" if protocol is Protocol.BINARY else ""))
    return lines


def pair_table(table: pd.DataFrame, pairs: Sequence[tuple[str, str, str]], metrics: Sequence[str]) -> list[str]:
    """Paired differences ``a - b`` on the same probes, for each metric."""
    present = set(table["program"].astype(str))
    head = "| | comparison | pairs |" + "".join(f" {m} [95% CI], p |" for m in metrics)
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, a, b in pairs:
        if a not in present or b not in present:
            continue
        cells = []
        n = 0
        sub = table[table["program"].isin([a, b])]
        for metric in metrics:
            result = compare_to_baseline(sub, b, metric=metric).iloc[0]
            digits = 1 if metric == "agreement" else 3
            n = int(result["n_pairs"])
            if n == 0:
                raise SystemExit(f"{a} and {b} share no probe: the run folders do not pair (same split and seed?)")
            diff = _signed(result["mean_diff"], result["ci_low"], result["ci_high"], digits)
            cells.append(f" {diff}, p = {result['p_value']:.4f} |")
        lines.append(f"| {label} | `{a}` - `{b}` | {n:,} |" + "".join(cells))
    return lines


def held_out_lines(table: pd.DataFrame) -> list[str]:
    """The program learned on 28 countries against chrF++ and the all-country program, split by seen/unseen."""
    meta_countries = _trained_countries(HELD_OUT_PROGRAM)
    if HELD_OUT_PROGRAM not in set(table["program"]) or not meta_countries:
        return []
    seen = table["country"].isin(meta_countries)
    lines = [
        "",
        f"Learned on the dev questions of 28 countries only ({', '.join(sorted(meta_countries))}); "
        "the other 29 countries never entered its fit or its model stage:",
        "",
    ]
    for name, mask in (
        ("29 unseen countries", ~seen),
        ("28 countries it was fitted on", seen),
        ("all 57", seen | ~seen),
    ):
        lines += [f"**{name}**", ""]
        lines += pair_table(
            table[mask],
            [
                ("", HELD_OUT_PROGRAM, "self-align-chrf"),
                ("", HELD_OUT_PROGRAM, "compiled:learned-gemma-3-270m-binary"),
                ("", "compiled:learned-gemma-3-270m-binary", "self-align-chrf"),
            ],
            ["agreement"],
        )
        lines.append("")
    return lines


def _trained_countries(program: str) -> list[str]:
    from selfalign.programs.compiled import find_compiled

    try:
        folder = find_compiled(program.split(":", 1)[1])
    except Exception:  # the program is not installed here: no split
        return []
    return list(json.loads((folder / "meta.json").read_text(encoding="utf-8"))["countries"])


def section(run_dirs: Sequence[Path], pairs: Sequence[tuple[str, str, str]], metrics: Sequence[str]) -> list[str]:
    """The tables of one protocol over the run tables of ``run_dirs`` (one spec run, or its programs run in
    several folders on the same split)."""
    table = pd.concat([load_run_table(d) for d in run_dirs], ignore_index=True)
    if table.duplicated(["program", "country", "question_id"]).any():
        raise SystemExit("the run folders hold the same program twice; give each program's rows once")
    survey = load_survey(str(table["survey"].iloc[0]))
    protocol = Protocol(str(table["protocol"].iloc[0]))
    table = add_copy_columns(table, survey)
    n_pairs = table.drop_duplicates(["country", "question_id"]).shape[0]
    lines = [
        f"## Protocol {protocol.value}",
        "",
        f"Run {', '.join(f'`{d}`' for d in run_dirs)}: {table['country'].nunique()} countries, "
        f"{table['question_id'].nunique()} test questions, "
        f"{n_pairs:,} (country, question) pairs per program; {int((~table['ok'].astype(bool)).sum())} failed probes.",
        "",
        *program_table(table, survey, protocol),
        "",
        "Paired differences (same probes):",
        "",
        *pair_table(table, pairs, metrics),
    ]
    if protocol is Protocol.BINARY:
        lines += held_out_lines(table)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", type=Path, nargs="+", help="run folder(s) of evals/value-structure.toml")
    parser.add_argument(
        "--options", type=Path, nargs="+", default=None, help="run folder(s) of evals/value-structure-options.toml"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    lines = [
        "# Value structure and learned selection: results",
        "",
        "Written by `evals/results/value-structure/summarize.py`. Agreement with the country's majority (%) and "
        "1 - JS distance; intervals: 95% cluster bootstrap over questions; paired differences on the same probes "
        "with a sign-flip permutation p-value.",
        "",
        *section(args.binary, BINARY_PAIRS, ["agreement", "js_similarity"]),
    ]
    if args.options is not None:
        lines += ["", *section(args.options, OPTIONS_PAIRS, ["js_similarity", "agreement"])]
    text = "\n".join(lines) + "\n"
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    try:
        main()
    except SelfAlignError as exc:  # a missing or unreadable run folder: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None
