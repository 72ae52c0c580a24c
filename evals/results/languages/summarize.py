"""Test language x demonstration language breakdown of a run of ``evals/languages.toml``.

``selfalign report`` compares programs over the whole run table; this script splits it by the two factors of
the languages spec, reading nothing but the stored run table::

    python evals/results/languages/summarize.py runs/languages --out evals/results/languages

It writes ``languages.md`` (tables) and ``language_grid.png`` (agreement per condition with 95% intervals).
"Native" is each country's language as resolved by the runner (e.g. EGY -> ar); intervals are cluster
bootstraps over questions and p-values sign-flip permutation tests on the paired probes (selfalign.metrics).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from selfalign.metrics import compare_to_baseline, summarize
from selfalign.runtable import load_run_table

BASELINE = "zero-shot"
TREATMENT = "self-align-chrf"


def _fmt(mean: float, low: float, high: float, digits: int = 1) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _diff(mean: float, low: float, high: float, p: float) -> str:
    if math.isnan(mean):
        return "-"
    shown = f"p={p:.3f}" if p >= 0.001 else "p<0.001"
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}], {shown}"


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def prepare(table: pd.DataFrame) -> pd.DataFrame:
    """The run table with ``test`` and ``demos`` columns: "en" or "native"."""
    frame = table.copy()
    frame["test"] = frame["language"].map(lambda v: "en" if v == "en" else "native")
    frame["demos"] = frame["demo_language"].map(lambda v: "en" if v == "en" else "native")
    return frame


def condition_table(frame: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Zero-shot and self-alignment agreement per (test, demos) cell, and the paired gain."""
    zero = summarize(
        frame[frame["program"] == BASELINE].drop_duplicates(["country", "language", "question_id"]),
        ["test"],
        ["agreement", "js_similarity"],
    )
    chrf = summarize(frame[frame["program"] == TREATMENT], ["test", "demos"], ["agreement", "js_similarity"])
    gains = compare_to_baseline(frame[frame["program"].isin([BASELINE, TREATMENT])], BASELINE, by=["test", "demos"])
    rows = []
    for r in chrf.itertuples():
        z = zero[zero["test"] == r.test].iloc[0]
        g = gains[(gains["test"] == r.test) & (gains["demos"] == r.demos)].iloc[0]  # every cell has a baseline
        rows.append(
            [
                r.test,
                r.demos,
                str(int(r.n_ok)),
                _fmt(z.agreement_mean, z.agreement_ci_low, z.agreement_ci_high),
                _fmt(r.agreement_mean, r.agreement_ci_low, r.agreement_ci_high),
                _diff(g.mean_diff, g.ci_low, g.ci_high, g.p_value),
                f"{z.js_similarity_mean:.3f}",
                f"{r.js_similarity_mean:.3f}",
            ]
        )
    header = [
        "test language",
        "demonstrations",
        "probes",
        "zero-shot agreement %",
        "self-align-chrf k=5 %",
        "gain (pp) [95% CI], p",
        "zero-shot JS",
        "self-align JS",
    ]
    plot = chrf.assign(kind="self-align, demos " + chrf["demos"])
    plot = pd.concat([zero.assign(kind="zero-shot", demos="-"), plot], ignore_index=True)
    return _md(header, rows), plot


def demo_language_table(frame: pd.DataFrame) -> str:
    """Native against English demonstrations, paired on the same test probes."""
    chrf = frame[frame["program"] == TREATMENT].copy()
    chrf["program"] = "demos " + chrf["demos"]
    chrf["demo_language"] = "-"
    if set(chrf["program"]) != {"demos en", "demos native"}:
        return "(needs both demonstration languages)"
    result = compare_to_baseline(chrf, "demos en", by=["test"])
    rows = [
        [
            r.test,
            str(int(r.n_pairs)),
            f"{r.mean_baseline:.1f}",
            f"{r.mean_program:.1f}",
            _diff(r.mean_diff, r.ci_low, r.ci_high, r.p_value),
        ]
        for r in result.itertuples()
    ]
    return _md(["test language", "pairs", "demos en %", "demos native %", "native - en (pp) [95% CI], p"], rows)


def test_language_table(frame: pd.DataFrame) -> str:
    """Native against English test questions, per program, paired on country and question."""
    rows = []
    for program in (BASELINE, TREATMENT):
        part = frame[frame["program"] == program].copy()
        if program == BASELINE:
            part = part.drop_duplicates(["country", "language", "question_id"])
        part["program"] = "test " + part["test"]
        part["language"] = "-"
        part["demo_language"] = part["demos"] if program == TREATMENT else "-"
        if set(part["program"]) != {"test en", "test native"}:
            continue
        r = compare_to_baseline(part, "test en").iloc[0]
        rows.append(
            [
                program,
                str(int(r.n_pairs)),
                f"{r.mean_baseline:.1f}",
                f"{r.mean_program:.1f}",
                _diff(r.mean_diff, r.ci_low, r.ci_high, r.p_value),
            ]
        )
    return _md(["program", "pairs", "test en %", "test native %", "native - en (pp) [95% CI], p"], rows)


def country_table(frame: pd.DataFrame) -> str:
    """Agreement (%) per country and condition."""
    cells = summarize(frame, ["country", "program", "test", "demos"], ["agreement"])
    rows = []
    for country in sorted(frame["country"].unique()):
        part = cells[cells["country"] == country]
        native = sorted(set(frame[(frame["country"] == country) & (frame["test"] == "native")]["language"]))

        def get(program: str, test: str, demos: str | None, part: pd.DataFrame = part) -> str:
            sel = part[(part["program"] == program) & (part["test"] == test)]
            if demos is not None:
                sel = sel[sel["demos"] == demos]
            return f"{sel['agreement_mean'].iloc[0]:.1f}" if not sel.empty else "-"

        rows.append(
            [
                country,
                ",".join(native),
                str(frame[frame["country"] == country]["question_id"].nunique()),
                get(BASELINE, "en", None),
                get(TREATMENT, "en", "en"),
                get(TREATMENT, "en", "native"),
                get(BASELINE, "native", None),
                get(TREATMENT, "native", "en"),
                get(TREATMENT, "native", "native"),
            ]
        )
    header = [
        "country",
        "native",
        "questions",
        "ZS en",
        "SA en/en",
        "SA en/native",
        "ZS native",
        "SA native/en",
        "SA native/native",
    ]
    return _md(header, rows)


def agree_table(frame: pd.DataFrame) -> tuple[str, float]:
    """How often the model answers 'agree', per condition and test language, against the countries' majorities."""
    probes = frame[~((frame["program"] == BASELINE) & frame.duplicated(["country", "language", "question_id"]))]
    probes = probes.assign(
        condition=probes["program"].where(probes["program"] == BASELINE, "SA demos " + probes["demos"]),
        says_agree=(probes["model_choice"] == "agree") * 100.0,
    )
    majority = frame.drop_duplicates(["country", "question_id"])
    always_agree = float((majority["country_majority"] == "agree").mean() * 100)
    wide = probes.pivot_table(index="language", columns="condition", values="says_agree", aggfunc="mean")
    conditions = [c for c in (BASELINE, "SA demos en", "SA demos native") if c in wide.columns]
    rows = [[str(lang), *(f"{row[c]:.0f}" for c in conditions)] for lang, row in wide.iterrows()]
    text = _md(["test language", *(f"{c}: says agree %" for c in conditions)], rows)
    text += (
        f"\n\nThe countries' majority agrees on {always_agree:.1f}% of these (country, question) pairs, so a model"
        f" that always answers 'agree' scores {always_agree:.1f}% agreement."
    )
    return text, always_agree


def plot(points: pd.DataFrame, path: Path, always_agree: float | None = None) -> None:
    """Agreement with 95% intervals: zero-shot and self-alignment per demonstration language, per test language."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ["zero-shot", "self-align, demos en", "self-align, demos native"]
    tests = ["en", "native"]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.26
    for i, kind in enumerate(kinds):
        xs, ys, lo, hi = [], [], [], []
        for j, test in enumerate(tests):
            sel = points[(points["kind"] == kind) & (points["test"] == test)]
            if sel.empty:
                continue
            r = sel.iloc[0]
            xs.append(j + (i - 1) * width)
            ys.append(r.agreement_mean)
            lo.append(r.agreement_mean - r.agreement_ci_low)
            hi.append(r.agreement_ci_high - r.agreement_mean)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=kind)
    ax.set_xticks(range(len(tests)), [f"test questions in {t}" for t in tests])
    ax.set_ylabel("agreement with country majority (%)")
    ax.set_ylim(0, 110)
    ax.axhline(50, color="grey", lw=0.6, ls=":")
    if always_agree is not None:
        ax.axhline(always_agree, color="black", lw=0.8, ls="--", label=f"always 'agree' ({always_agree:.1f}%)")
    ax.legend(loc="upper right", fontsize=7, ncol=2)
    ax.set_title("Gemma 3 270M, binary protocol, test split", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Write languages.md and language_grid.png for a run folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    frame = prepare(load_run_table(args.run_dir))
    grid, points = condition_table(frame)
    agree_text, always_agree = agree_table(frame)
    ok = frame["ok"].astype(bool)
    text = "\n\n".join(
        [
            "# Test language x demonstration language",
            f"Run table: {len(frame)} rows, {frame['country'].nunique()} countries, "
            f"{frame['question_id'].nunique()} questions, {int((~ok).sum())} failed probes (left out). "
            "Agreement: the model's more likely side equals the country's majority side (%). Brackets: 95% "
            "cluster-bootstrap intervals over questions; p: paired sign-flip permutation test.",
            "## Agreement per condition\n\n" + grid,
            "## Native against English demonstrations (self-align-chrf, same test probes)\n\n"
            + demo_language_table(frame),
            "## Native against English test questions (same country and question)\n\n" + test_language_table(frame),
            "## Per country (agreement %; ZS zero-shot, SA self-align-chrf k=5; test/demonstration language)\n\n"
            + country_table(frame),
            "## How often the model says 'agree' (per test language)\n\n" + agree_text,
            "![agreement per condition](language_grid.png)",
        ]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "languages.md").write_text(text + "\n", encoding="utf-8")
    plot(points, args.out / "language_grid.png", always_agree)
    print(f"wrote {args.out / 'languages.md'} and {args.out / 'language_grid.png'}")


if __name__ == "__main__":
    main()
