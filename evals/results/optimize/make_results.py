"""Compile per-country and pooled programs on the embedded model and compare them with self-align-chrf on test.

Usage (from the repository root; about an hour and a half on 2 CPU cores, resumable through the cache)::

    .venv/bin/python evals/results/optimize/make_results.py \
        --countries EGY,USA,JPN,NGA --pooled DEU,IND,MEX --cache-dir /tmp/selfalign-optimize-cache

1. ``selfalign optimize`` for each country (binary protocol, default budget and search), saved under
   ``programs/compiled/`` (skipped when the program exists, unless ``--force``);
2. one pooled program over the ``--pooled`` countries (scored as their average during the search);
3. one run (the project's runner, test split, demonstration pool = dev) of ``self-align-chrf``, each country's
   own compiled program and the pooled program on every country: the pooled program on the per-country
   countries is a transfer to countries unseen during its search;
4. paired differences against ``self-align-chrf`` (percentage points of agreement, cluster bootstrap over
   questions, sign-flip p-value) per country and pooled, written to ``results.csv`` and ``tables.md`` here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from selfalign import DEFAULT_MODEL
from selfalign.metrics import compare_to_baseline, summarize
from selfalign.optimize import bundled_compiled_dir, default_name, optimize
from selfalign.runner import run_spec
from selfalign.specs import parse_spec

HERE = Path(__file__).resolve().parent
BASELINE = "self-align-chrf"


def _codes(value: str) -> list[str]:
    return [c.strip().upper() for c in value.split(",") if c.strip()]


def compile_programs(args: argparse.Namespace) -> dict[str, dict]:
    """Run (or reuse) the optimizations; returns each program's meta by name."""
    jobs = [[c] for c in _codes(args.countries)] + ([_codes(args.pooled)] if args.pooled else [])
    metas: dict[str, dict] = {}
    for countries in jobs:
        name = default_name(countries, args.model, "binary")
        meta_path = bundled_compiled_dir() / name / "meta.json"
        if meta_path.exists() and not args.force:
            metas[name] = json.loads(meta_path.read_text())
            print(f"{name}: exists (compiled in {metas[name]['total_seconds']:.0f} s)")
            continue
        budget = args.budget if len(countries) == 1 else args.pooled_budget
        started = time.monotonic()
        result = optimize(countries, model=args.model, budget=budget, cache_dir=args.cache_dir, progress=True)
        metas[name] = result.meta
        print(f"{name}: {result.meta['chosen']} in {time.monotonic() - started:.0f} s")
    return metas


def compare(args: argparse.Namespace, metas: dict[str, dict]) -> pd.DataFrame:
    """The runner on the test split: chrF, own program, pooled program, for every country."""
    pooled = default_name(_codes(args.pooled), args.model, "binary") if args.pooled else None
    grids = []
    for country in _codes(args.countries):
        programs = [BASELINE, "compiled:" + default_name([country], args.model, "binary")]
        if pooled:
            programs.append("compiled:" + pooled)
        grids.append({"programs": programs, "countries": [country]})
    if pooled:
        grids.append({"programs": [BASELINE, "compiled:" + pooled], "countries": _codes(args.pooled)})
    spec = parse_spec(
        {"name": "optimize-results", "survey": "wvs7", "protocol": "binary", "split": "test",
         "models": [args.model], "grid": grids},
        source="make_results.py",
    )  # fmt: skip
    result = run_spec(spec, args.run_dir, cache_dir=args.cache_dir, progress=True)
    return result.table


def analyse(args: argparse.Namespace, table: pd.DataFrame, metas: dict[str, dict]) -> pd.DataFrame:
    """Paired differences against chrF per country and over countries, for each role."""
    pooled = default_name(_codes(args.pooled), args.model, "binary") if args.pooled else None
    pooled_countries = set(_codes(args.pooled)) if args.pooled else set()
    table = table.copy()
    table["role"] = [
        BASELINE if p == BASELINE
        else ("pooled (search country)" if c in pooled_countries else "pooled (unseen country)")
        if pooled and p == "compiled:" + pooled else "own compiled program"
        for p, c in zip(table["program"], table["country"], strict=True)
    ]  # fmt: skip
    rows = []
    for role in ("own compiled program", "pooled (unseen country)", "pooled (search country)"):
        part = table[table["role"] == role]
        if part.empty:
            continue
        countries = sorted(part["country"].unique())
        base = table[(table["role"] == BASELINE) & table["country"].isin(countries)]
        frame = pd.concat([base, part.assign(program=role)], ignore_index=True)
        for scope, sub in [("all", frame), *[(c, frame[frame["country"] == c]) for c in countries]]:
            paired = compare_to_baseline(sub, BASELINE)
            stats = summarize(sub, ["program"], metrics=("agreement", "js_similarity"))
            js = dict(zip(stats["program"], stats["js_similarity_mean"], strict=True))
            for r in paired.itertuples():
                rows.append({
                    "comparison": role, "country": scope, "n_pairs": r.n_pairs,
                    "chrf_agreement": round(r.mean_baseline, 2), "program_agreement": round(r.mean_program, 2),
                    "diff_pp": round(r.mean_diff, 2), "ci_low": round(r.ci_low, 2), "ci_high": round(r.ci_high, 2),
                    "p_value": round(r.p_value, 4), "chrf_js": round(js.get(BASELINE, float("nan")), 4),
                    "program_js": round(js.get(role, float("nan")), 4),
                })  # fmt: skip
    return pd.DataFrame(rows)


def alternatives(args: argparse.Namespace, metas: dict[str, dict]) -> pd.DataFrame:
    """Post-hoc: where the search kept the paper default, the finalist that was best on validation, scored on
    test questions against chrF (what switching without the evidence rule would have given)."""
    from selfalign.loaders import load_survey
    from selfalign.metrics import paired_difference
    from selfalign.models import ModelClient, open_cache
    from selfalign.optimize import Evaluator, Item, paper_default
    from selfalign.optimize.space import Candidate
    from selfalign.splits import split_questions
    from selfalign.survey import Protocol

    survey = load_survey("wvs7")
    split = split_questions(survey)
    client = ModelClient(args.model, cache=open_cache(args.cache_dir) if args.cache_dir else None)
    ev = Evaluator(survey, Protocol.BINARY, frozenset(split.dev), client)
    rows = []
    per_country = _codes(args.countries)
    own: tuple[list[float], list[float], list[str]] = ([], [], [])  # per-country alternatives, pooled together
    for name, meta in metas.items():
        selection = meta.get("selection", {})
        if selection.get("switched", True):
            continue
        best = next(f for f in meta["finalists"] if f["label"] == selection["best_on_validation"])
        config = best["config"]
        candidate = Candidate(config["label"], config["origin"], config["parts"], config.get("instructions"),
                              config.get("fixed_demos", []))  # fmt: skip
        countries = meta["countries"] if len(meta["countries"]) == 1 else per_country
        role = "best on validation, not adopted" + ("" if len(meta["countries"]) == 1 else " (pooled, unseen)")
        for scope in [*countries, "all"] if len(countries) > 1 else countries:
            codes = countries if scope == "all" else [scope]
            items = [Item(c, q) for c in codes for q in split.test if survey.has_answers(c, q)]
            ours = ev.run(candidate.key, candidate.build(), items)
            base = ev.run(paper_default().key, paper_default().build(), items)
            a = [100 * o.agreement for o in ours]
            b = [100 * o.agreement for o in base]
            r = paired_difference(a, b, [i.question_id for i in items])
            if len(meta["countries"]) == 1:
                own[0].extend(a), own[1].extend(b), own[2].extend(i.question_id for i in items)
            rows.append({
                "comparison": role, "country": scope, "program": name, "candidate": candidate.label,
                "n_pairs": r.n_pairs, "chrf_agreement": round(sum(b) / len(b), 2),
                "program_agreement": round(sum(a) / len(a), 2), "diff_pp": round(r.mean_diff, 2),
                "ci_low": round(r.ci_low, 2), "ci_high": round(r.ci_high, 2), "p_value": round(r.p_value, 4),
            })  # fmt: skip
    if own[0]:
        r = paired_difference(own[0], own[1], own[2])
        rows.append({
            "comparison": "best on validation, not adopted", "country": "all", "program": "per-country",
            "candidate": "", "n_pairs": r.n_pairs, "chrf_agreement": round(sum(own[1]) / len(own[1]), 2),
            "program_agreement": round(sum(own[0]) / len(own[0]), 2), "diff_pp": round(r.mean_diff, 2),
            "ci_low": round(r.ci_low, 2), "ci_high": round(r.ci_high, 2), "p_value": round(r.p_value, 4),
        })  # fmt: skip
    return pd.DataFrame(rows)


def tables_md(results: pd.DataFrame, metas: dict[str, dict]) -> str:
    """Markdown tables for the README."""
    lines = ["### Compiled programs", "",
             "| program | chosen selection | validation agr. % (chrF) | best alternative on validation: diff, p |"
             " test agr. % | search calls | time |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, meta in metas.items():
        val = meta["dev_score"]["validation"] or {}
        base = meta["baseline"]["validation"] or {}
        test = meta["test_score"] or {}
        sel = meta.get("selection", {})
        alt = (
            f"{sel['best_on_validation']}: {sel['diff_vs_default_pp']:+.1f} pp, p = {sel['p_value']:.2f}"
            if "p_value" in sel else sel.get("best_on_validation", "-")
        )  # fmt: skip
        lines.append(
            f"| {name} | {meta['chosen']} | {100 * (val.get('agreement') or 0):.1f} "
            f"({100 * (base.get('agreement') or 0):.1f}) | {alt} | {100 * (test.get('agreement') or 0):.1f} | "
            f"{meta['calls_spent']} / {meta['budget']} | {meta['total_seconds'] / 60:.1f} min |"
        )
    lines += ["", "### Test questions: paired difference against self-align-chrf", "",
              "| comparison | country | pairs | chrF agr. % | program agr. % | diff (pp) [95% CI] | p |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results.itertuples():
        lines.append(
            f"| {r.comparison} | {r.country} | {r.n_pairs} | {r.chrf_agreement:.1f} | {r.program_agreement:.1f} | "
            f"{r.diff_pp:+.1f} [{r.ci_low:+.1f}, {r.ci_high:+.1f}] | {r.p_value:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--countries", default="EGY,USA,JPN,NGA")
    parser.add_argument("--pooled", default="DEU,IND,MEX")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--budget", type=int, default=700)
    parser.add_argument("--pooled-budget", type=int, default=1500)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--run-dir", default="runs/optimize-results")
    parser.add_argument("--force", action="store_true", help="re-run optimizations that exist")
    args = parser.parse_args()
    metas = compile_programs(args)
    table = compare(args, metas)
    results = analyse(args, table, metas)
    extra = alternatives(args, metas)
    results = pd.concat([results, extra], ignore_index=True)
    results.to_csv(HERE / "results.csv", index=False)
    (HERE / "tables.md").write_text(tables_md(results, metas), encoding="utf-8")
    print(tables_md(results, metas))


if __name__ == "__main__":
    main()
