"""Summaries and reports computed from a stored run table (see :mod:`selfalign.runner`) and, for the model-free
references, the survey it was run on.

- :func:`analysis_table` prepares a run table for comparison: each row gets a ``variant`` (the program, with
  ``k=<k>`` for programs that show demonstrations), and programs without demonstrations, whose probes do not
  depend on k or the demonstration language, keep one row per probe.
- :func:`summary_frame` is the table ``selfalign compare`` prints and writes as CSV: per variant, overall and per
  country, the agreement (percent) and similarities with 95% cluster-bootstrap intervals over questions, and
  the paired difference against the zero-shot baseline with its interval and permutation p-value, and for
  demonstration programs what copying the shown demonstrations would score with no model
  (:mod:`selfalign.references`).
- a run with perturbations of the prompt (:mod:`selfalign.perturbations`) gets two robustness tables and a plot
  (:mod:`selfalign.robustness`; also written as ``robustness.csv``): per program the spread of its metrics across
  perturbations, the answers that flip against the unperturbed prompt, and its gain over zero-shot under each
  perturbation; the other tables pool the perturbations;
- :func:`render_report` writes ``report.md``, ``report.html`` and the plots as PNG files, reading nothing but the
  run table and the prompts stored with the run (:mod:`selfalign.prompt_store`). The HTML page is one
  self-contained, offline file: plots as base64 PNG, and a per-probe view (:mod:`selfalign.probe_view`) where a
  reader filters the rows and opens one probe (its prompt as sent, the demonstrations, the model's distribution
  beside the country's); runs that stored no prompts render with "prompt not stored for this run".
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selfalign.errors import SelfAlignError
from selfalign.metrics import compare_to_baseline, summarize
from selfalign.perturbations import PERTURBATION_COLUMNS
from selfalign.probe_view import probe_css, probe_payload, probe_section
from selfalign.prompt_store import read_prompts
from selfalign.references import COPY_INPUTS, COPY_SUMMARY, add_copy_columns, summarize_copying, table_survey
from selfalign.robustness import (
    ROBUSTNESS_CSV,
    perturbation_order,
    perturbation_rows,
    program_rows,
    robustness_frame,
    spread,
)
from selfalign.runtable import load_run_table
from selfalign.survey import Survey

BASELINE = "zero-shot"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SUMMARY_CSV = "summary.csv"
_ROW_ID = ("model", "survey", "protocol", "country", "language", "seed", "question_id", *PERTURBATION_COLUMNS)


# --- preparing the table -------------------------------------------------------------------------------------


def analysis_table(table: pd.DataFrame) -> pd.DataFrame:
    """The run table ready for comparisons: ``variant`` column, one row per probe of demonstration-free programs.

    A program whose rows all show no demonstration (``n_demos`` 0, e.g. zero-shot and persona) is named by
    itself and its rows repeated under several k or demonstration languages (same prompt, same answer) are
    kept once per perturbation of the prompt, with ``demo_language`` cleared so that it pairs with every
    demonstration language. Other programs are named ``"<program> k=<k>"``.
    """
    frame = table.copy()
    if "n_demos" not in frame.columns:
        frame["n_demos"] = frame["k"]
    for col in ("program", "demo_language", "country", "question_id", "topic", "model", "language"):
        if col in frame.columns:
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    demo_free = frame.groupby("program")["n_demos"].transform("max").fillna(0) == 0
    frame["variant"] = np.where(
        demo_free, frame["program"].astype(str), frame["program"].astype(str) + " k=" + frame["k"].astype(str)
    )
    keys = [c for c in _ROW_ID if c in frame.columns]
    free = frame[demo_free].sort_values("k", kind="stable").drop_duplicates([*keys, "program"], keep="first")
    free = free.assign(demo_language=None)
    frame = pd.concat([free, frame[~demo_free]], ignore_index=True)
    return frame


def main_variants(frame: pd.DataFrame) -> list[str]:
    """Variants run on every country of the table (the main grid), in a stable order: baseline first."""
    countries = frame.groupby("variant")["country"].nunique()
    full = [v for v, n in countries.items() if n == countries.max()]
    return _ordered(full)


def _ordered(variants: Sequence[str]) -> list[str]:
    def rank(v: str) -> tuple[int, str, int]:
        name, _, k = v.partition(" k=")
        first = {"zero-shot": 0, "persona": 1}.get(name, 2)
        return (first, name, int(k) if k.isdigit() else -1)

    return sorted(variants, key=rank)


def _baseline(frame: pd.DataFrame) -> str | None:
    """Zero-shot when it has answered probes to compare against (else no paired comparison)."""
    rows = frame[(frame["variant"] == BASELINE) & frame["ok"].astype(bool)]
    return BASELINE if not rows.empty and rows["agreement"].notna().any() else None


def _by_program(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with ``program`` replaced by ``variant`` (what metrics functions group and pair on)."""
    return frame.assign(program=frame["variant"])


# --- summaries ------------------------------------------------------------------------------------------------------


def summary_frame(
    table: pd.DataFrame, *, n_boot: int = 2000, n_perm: int = 10000, survey: Survey | None = None
) -> pd.DataFrame:
    """Per variant, overall (``scope`` "overall", ``country`` empty) and per country (``scope`` "country"):
    counts, agreement in percent, JS and Wasserstein similarity with 95% intervals, the paired difference
    in agreement against zero-shot (percentage points, interval, p-value) where zero-shot was run, and for
    demonstration programs the model-free reference of copying the shown demonstrations
    (:func:`selfalign.references.summarize_copying`: ``copy_*`` and ``model_vs_copy*`` columns; NaN when the
    survey, by default loaded by the table's ``survey`` name, or the table's demonstration columns are not
    available)."""
    frame = _by_program(analysis_table(table))
    if not set(COPY_INPUTS) <= set(frame.columns):
        survey = None  # a table without the demonstrations' columns: no model-free reference
    elif survey is None:
        survey = table_survey(frame)
    if survey is not None:
        frame = add_copy_columns(frame, survey)
    parts = []
    for scope, by in (("overall", ["variant"]), ("country", ["country", "variant"])):
        summary = summarize(frame, by, n_boot=n_boot)
        if survey is not None:
            summary = summary.merge(summarize_copying(frame, by, n_boot=n_boot, n_perm=n_perm), on=by, how="left")
        summary.insert(0, "scope", scope)
        if scope == "overall":
            summary.insert(1, "country", "")
        summary["n_countries"] = (
            frame.groupby("variant")["country"].nunique().reindex(summary["variant"]).to_numpy()
            if scope == "overall"
            else 1
        )
        baseline = _baseline(frame)
        if baseline is not None:
            paired = compare_to_baseline(
                frame, baseline, by=[c for c in by if c != "variant"], n_boot=n_boot, n_perm=n_perm
            )
            paired = paired.rename(
                columns={
                    "program": "variant",
                    "mean_diff": "diff_vs_zero_shot",
                    "ci_low": "diff_ci_low",
                    "ci_high": "diff_ci_high",
                    "n_pairs": "diff_n_pairs",
                }
            ).drop(columns=["mean_program", "mean_baseline"])
            summary = summary.merge(paired, on=[c for c in by], how="left")
        parts.append(summary)
    out = pd.concat(parts, ignore_index=True)
    order = {v: i for i, v in enumerate(_ordered(out["variant"].unique()))}
    out["_order"] = out["variant"].map(order)
    out = out.sort_values(["scope", "country", "_order"], kind="stable", key=_scope_key).drop(columns="_order")
    for col in ("diff_vs_zero_shot", "diff_ci_low", "diff_ci_high", "p_value", "diff_n_pairs", *COPY_SUMMARY):
        if col not in out.columns:
            out[col] = math.nan
    return out.reset_index(drop=True)


def _scope_key(col: pd.Series) -> pd.Series:
    if col.name == "scope":
        return col.map({"overall": 0, "country": 1})
    return col


def fmt_ci(mean: float, low: float, high: float, digits: int = 1) -> str:
    """``"62.3 [58.1, 66.0]"``; ``"-"`` for NaN."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def fmt_diff(mean: float, low: float, high: float, p: float, digits: int = 1) -> str:
    """``"+4.2 [0.3, 8.1] p=0.04"``; ``""`` when not compared."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}] p={fmt_p(p)}"


def fmt_p(p: float) -> str:
    """A p-value with two significant digits (``<0.001`` below that)."""
    if p is None or math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.2g}"


# --- plots ------------------------------------------------------------------------------------------------------------


@dataclass
class Figure:
    """A rendered plot: its file name, caption and PNG bytes."""

    name: str
    caption: str
    png: bytes = field(repr=False)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def plot_country_gains(gains: pd.DataFrame, variants: Sequence[str]) -> Figure | None:
    """Per-country gain in agreement over zero-shot with 95% intervals, one marker per variant."""
    if gains.empty or not variants:
        return None
    plt = _pyplot()
    countries = sorted(gains["country"].unique())
    height = max(3.0, 0.28 * len(countries) * max(1, len(variants)) ** 0.5 + 1.5)
    fig, ax = plt.subplots(figsize=(8, height))
    offsets = np.linspace(-0.3, 0.3, len(variants)) if len(variants) > 1 else [0.0]
    y_of = {c: i for i, c in enumerate(countries)}
    for offset, variant in zip(offsets, variants, strict=True):
        part = gains[gains["program"] == variant]
        y = np.array([y_of[c] for c in part["country"]]) + offset
        x = part["mean_diff"].to_numpy()
        err = np.vstack([x - part["ci_low"].to_numpy(), part["ci_high"].to_numpy() - x])
        ax.errorbar(x, y, xerr=err, fmt="o", ms=3.5, capsize=1.5, lw=0.8, label=variant)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(countries)), countries, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("agreement gain over zero-shot (percentage points, 95% CI)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return Figure("country_gains.png", "Per-country gain in agreement over zero-shot, with 95% intervals.", _png(fig))


def plot_topic_heatmap(frame: pd.DataFrame, variants: Sequence[str]) -> Figure | None:
    """Topic x variant heatmap of mean agreement (percent)."""
    ok = frame[frame["ok"].astype(bool) & frame["variant"].isin(variants)]
    if ok.empty:
        return None
    pivot = (ok.pivot_table(index="topic", columns="variant", values="agreement", aggfunc="mean") * 100).reindex(
        columns=[v for v in variants if v in set(ok["variant"])]
    )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * pivot.shape[1], 0.45 * pivot.shape[0] + 1.6))
    image = ax.imshow(pivot.to_numpy(), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(pivot.shape[1]), pivot.columns, rotation=30, ha="right", fontsize=8)
    n_questions = ok.groupby("topic")["question_id"].nunique()
    ax.set_yticks(range(pivot.shape[0]), [f"{t} ({n_questions[t]} q.)" for t in pivot.index], fontsize=8)
    for i in range(pivot.shape[0]):
        for j in range(pivot.shape[1]):
            value = pivot.iat[i, j]
            if not math.isnan(value):
                color = "black" if value >= 60 else "white"
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, label="agreement (%)")
    return Figure("topic_heatmap.png", "Agreement (%) by topic and program.", _png(fig))


def k_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Agreement against k for programs run with several k, on the countries that have every k.

    Columns: ``program``, ``k``, ``n_countries``, ``agreement_mean``, ``agreement_ci_low``, ``agreement_ci_high``
    and, for reference on the same countries, rows of the demonstration-free programs with ``k`` 0.
    """
    demo = frame[frame["n_demos"].fillna(0) > 0] if "n_demos" in frame.columns else frame
    parts = []
    for program, rows in demo.groupby("program"):
        ks = sorted(rows["k"].unique())
        if len(ks) < 2:
            continue
        per_country = rows.groupby("country")["k"].nunique()
        countries = sorted(per_country[per_country == len(ks)].index)
        subset = rows[rows["country"].isin(countries)]
        s = summarize(subset, ["k"], ["agreement"])
        s.insert(0, "program", program)
        s.insert(2, "n_countries", len(countries))
        parts.append(s)
        free = frame[frame["country"].isin(countries) & (frame["variant"] == frame["program"])]
        for name, ref in free.groupby("program"):
            r = summarize(ref, [], ["agreement"])
            r.insert(0, "program", f"{name} (reference for {program})")
            r.insert(1, "k", 0)
            r.insert(2, "n_countries", len(countries))
            parts.append(r)
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, ignore_index=True)


def plot_k_curve(curves: pd.DataFrame) -> Figure | None:
    """Agreement against k with intervals; demonstration-free programs as horizontal reference lines."""
    if curves.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    curve_rows = curves[~curves["program"].str.contains(" (reference for ", regex=False)]
    for program, rows in curve_rows.groupby("program"):
        rows = rows.sort_values("k")
        x, y = rows["k"].to_numpy(dtype=float), rows["agreement_mean"].to_numpy()
        ax.errorbar(
            x,
            y,
            yerr=np.vstack([y - rows["agreement_ci_low"].to_numpy(), rows["agreement_ci_high"].to_numpy() - y]),
            marker="o",
            capsize=3,
            label=f"{program} ({int(rows['n_countries'].iloc[0])} countries)",
        )
    refs = curves[curves["program"].str.contains(" (reference for ", regex=False)]
    styles = iter(["--", ":", "-.", (0, (5, 1))] * 4)
    for _, ref in refs.drop_duplicates("program").iterrows():
        ax.axhline(ref["agreement_mean"], ls=next(styles), color="grey", lw=1, label=ref["program"])
    ax.set_xlabel("k (demonstrations)")
    ax.set_ylabel("agreement (%, 95% CI)")
    ax.set_xticks(sorted(curve_rows["k"].unique()))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return Figure("agreement_vs_k.png", "Agreement against the number of demonstrations k.", _png(fig))


def plot_robustness(robust: pd.DataFrame) -> Figure | None:
    """Per program, the gain in agreement over zero-shot under each perturbation with 95% intervals (without a
    zero-shot baseline: the agreement under each perturbation)."""
    rows = perturbation_rows(robust)
    if rows.empty:
        return None
    gains = rows[rows["gain_vs_baseline"].notna()]
    use_gain = not gains.empty
    rows = gains if use_gain else rows
    value, low, high = (
        ("gain_vs_baseline", "gain_ci_low", "gain_ci_high")
        if use_gain
        else ("agreement_mean", "agreement_ci_low", "agreement_ci_high")
    )
    programs = _ordered(rows["variant"].unique())
    labels = perturbation_order(rows["perturbation"].unique())
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.55 * len(programs) * max(1, len(labels)) ** 0.5 + 1.2)))
    offsets = np.linspace(-0.32, 0.32, len(labels)) if len(labels) > 1 else [0.0]
    for offset, label in zip(offsets, labels, strict=True):
        part = rows[rows["perturbation"] == label].set_index("variant").reindex(programs)
        y = np.arange(len(programs)) + offset
        x = part[value].to_numpy(dtype=float)
        err = np.vstack([x - part[low].to_numpy(dtype=float), part[high].to_numpy(dtype=float) - x])
        marker = "s" if label == "unperturbed" else "o"
        ax.errorbar(x, y, xerr=err, fmt=marker, ms=4, capsize=1.5, lw=0.8, label=label)
    if use_gain:
        ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(programs)), programs, fontsize=8)
    ax.invert_yaxis()
    what = "agreement gain over zero-shot (pp)" if use_gain else "agreement (%)"
    ax.set_xlabel(f"{what} under each perturbation, 95% CI")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    caption = (
        "Gain in agreement over zero-shot under each perturbation of the prompt (paired on the same probes), "
        "with 95% intervals."
        if use_gain
        else "Agreement under each perturbation of the prompt, with 95% intervals."
    )
    return Figure("robustness.png", caption, _png(fig))


def robustness_sections(robust: pd.DataFrame) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """The report's robustness tables: per program, and per program and perturbation."""
    programs = program_rows(robust)
    order = {v: i for i, v in enumerate(_ordered(programs["variant"].unique()))}
    programs = programs.sort_values("variant", key=lambda c: c.map(order))
    has_gain = programs["gain_vs_baseline"].notna().any() if "gain_vs_baseline" in programs.columns else False
    header = ["program", "perturbations", "agreement % (mean ± SD [min, max])", "SD across countries"]
    header += ["JS similarity", "answers flipped, mean %", "largest flip %"]
    if has_gain:
        header += ["gain over zero-shot holds", "weakest gain (pp) [95% CI]", "under"]
    cells = []
    for r in programs.itertuples():
        row = [
            str(r.variant),
            str(int(r.n_perturbations)),
            spread(r.agreement_mean, r.agreement_sd, r.agreement_min, r.agreement_max),
            "-" if math.isnan(r.agreement_sd_countries) else f"{r.agreement_sd_countries:.1f}",
            spread(r.js_similarity_mean, r.js_similarity_sd, r.js_similarity_min, r.js_similarity_max, 3),
            "-" if math.isnan(r.flip_pct) else f"{r.flip_pct:.1f}",
            "-" if math.isnan(r.flip_pct_max) else f"{r.flip_pct_max:.1f}",
        ]
        if has_gain:
            holds = getattr(r, "n_gain_holds", math.nan)
            if holds != holds:  # NaN: the baseline itself
                row += ["", "", ""]
            else:
                verdict = "yes" if bool(r.gain_holds) else "no"
                row += [
                    f"{verdict} ({int(holds)} of {int(r.n_perturbations)})",
                    f"{r.gain_vs_baseline:+.1f} [{r.gain_ci_low:+.1f}, {r.gain_ci_high:+.1f}]",
                    str(r.gain_weakest_under),
                ]
        cells.append(row)
    per = perturbation_rows(robust)
    labels = {p: i for i, p in enumerate(perturbation_order(per["perturbation"].unique()))}
    per = per.sort_values(["variant", "perturbation"], key=lambda c: c.map(order if c.name == "variant" else labels))
    detail_header = ["program", "perturbation", "probes", "failed", "agreement %", "vs unperturbed (pp)"]
    detail_header += ["answers flipped %"] + (["vs zero-shot (pp)"] if has_gain else [])
    detail = []
    for r in per.itertuples():
        row = [
            str(r.variant),
            str(r.perturbation),
            str(int(r.n_probes)),
            str(int(r.n_failed)),
            fmt_ci(r.agreement_mean, r.agreement_ci_low, r.agreement_ci_high),
            fmt_diff(r.delta_vs_unperturbed, r.delta_ci_low, r.delta_ci_high, r.delta_p),
            fmt_ci(r.flip_pct, r.flip_ci_low, r.flip_ci_high),
        ]
        if has_gain:
            row.append(fmt_diff(r.gain_vs_baseline, r.gain_ci_low, r.gain_ci_high, r.gain_p))
        detail.append(row)
    return [
        (
            "Robustness across perturbations of the prompt",
            "Each program under every perturbation of its prompt in the run (option order, answer words, "
            "template; selfalign.perturbations): the mean of the per-perturbation agreement with its standard "
            "deviation and range across perturbations, beside the standard deviation across countries under the "
            "unperturbed prompt for scale; the share of probes whose answer flips against the unperturbed prompt; "
            "and whether the gain over zero-shot holds under every perturbation (its paired 95% interval, "
            "against zero-shot under the same perturbation, above 0 each time).",
            header,
            cells,
        ),
        (
            "Robustness per perturbation",
            "Per program and perturbation: agreement with its 95% interval over questions; against the "
            "unperturbed prompt on the same probes, the paired change in agreement and the share of answers "
            "that flip (95% bootstrap intervals); the paired gain over zero-shot under the same perturbation.",
            detail_header,
            detail,
        ),
    ]


# --- the report ------------------------------------------------------------------------------------------------------


@dataclass
class Report:
    """A report's content: titled tables (header + rows of text), figures and notes."""

    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    sections: list[tuple[str, str, list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    summary: pd.DataFrame | None = field(default=None, repr=False)
    robustness: pd.DataFrame | None = field(default=None, repr=False)


def build_report(table: pd.DataFrame, *, n_boot: int = 2000, n_perm: int = 10000) -> Report:
    """Compute every table and figure of a report from a run table."""
    if table.empty:
        raise SelfAlignError("the run table has no rows")
    frame = analysis_table(table)
    runs = ", ".join(sorted(frame["run"].dropna().astype(str).unique())) if "run" in frame.columns else "run"
    report = Report(title=f"selfalign report: {runs}")
    ok = frame["ok"].astype(bool)
    for label, col in (("models", "model"), ("survey", "survey"), ("protocol", "protocol"), ("split", "split")):
        if col in frame.columns:
            report.facts.append((label, ", ".join(sorted(frame[col].dropna().astype(str).unique()))))
    robust = robustness_frame(frame, baseline=BASELINE, n_boot=n_boot, n_perm=n_perm)  # empty: one prompt
    if not robust.empty:
        labels = perturbation_order(perturbation_rows(robust)["perturbation"].unique())
        report.facts.append(
            (
                "perturbations of the prompt",
                f"{len(labels)}: {', '.join(labels)} (every table pools them but the robustness tables)",
            )
        )
    report.facts += [
        ("languages", ", ".join(sorted(frame["language"].dropna().astype(str).unique()))),
        ("countries", str(frame["country"].nunique())),
        ("questions", str(frame["question_id"].nunique())),
        ("probes (rows of the run table)", str(len(table))),
        ("distinct probes compared", str(len(frame))),
        ("failed probes (excluded from every metric)", f"{int((~ok).sum())} ({100 * (~ok).mean():.1f}%)"),
    ]
    constant = _constant_answer_reference(frame)
    if constant:
        report.facts.append(constant)
    summary = summary_frame(table, n_boot=n_boot, n_perm=n_perm)
    report.summary = summary
    if summary["copy_agreement_mean"].isna().all() and (frame["n_demos"].fillna(0) > 0).any():
        report.facts.append(("model-free references", "not computed: the run's survey could not be loaded"))
    overall = summary[summary["scope"] == "overall"]
    variants = main_variants(frame)
    report.sections.append(
        (
            "Overall",
            "Agreement: the model's most likely answer equals the country's majority (%); JS: 1 - Jensen-Shannon "
            "distance; W: 1 - normalised Wasserstein-1 (ordinal). Brackets: 95% bootstrap intervals over questions. "
            "Copying demos, no model: the agreement of answering what the shown demonstrations answered (binary: "
            "their majority side, a tie decided by the one nearest the test question; options: see "
            "selfalign.references), beside the model's paired difference from it on the same probes.",
            [
                "program",
                "countries",
                "probes",
                "failed",
                "agreement %",
                "JS similarity",
                "W similarity",
                "vs zero-shot (pp)",
                "copying demos, no model %",
                "model vs copying (pp)",
            ],
            [
                [
                    r.variant,
                    str(int(r.n_countries)),
                    str(int(r.n_probes)),
                    str(int(r.n_failed)),
                    fmt_ci(r.agreement_mean, r.agreement_ci_low, r.agreement_ci_high),
                    fmt_ci(r.js_similarity_mean, r.js_similarity_ci_low, r.js_similarity_ci_high, 3),
                    fmt_ci(
                        r.wasserstein_similarity_mean,
                        r.wasserstein_similarity_ci_low,
                        r.wasserstein_similarity_ci_high,
                        3,
                    ),
                    fmt_diff(r.diff_vs_zero_shot, r.diff_ci_low, r.diff_ci_high, r.p_value),
                    fmt_ci(r.copy_agreement_mean, r.copy_agreement_ci_low, r.copy_agreement_ci_high),
                    fmt_diff(r.model_vs_copy, r.model_vs_copy_ci_low, r.model_vs_copy_ci_high, r.model_vs_copy_p),
                ]
                for r in overall.itertuples()
            ],
        )
    )
    per_country = summary[(summary["scope"] == "country") & summary["variant"].isin(variants)]
    baseline = _baseline(frame)
    if baseline is not None:
        counts = []
        for variant in variants:
            if variant == baseline:
                continue
            rows = per_country[per_country["variant"] == variant]
            better = int((rows["diff_ci_low"] > 0).sum())
            worse = int((rows["diff_ci_high"] < 0).sum())
            mean_gain = rows["diff_vs_zero_shot"].mean()
            positive = str(int((rows["diff_vs_zero_shot"] > 0).sum()))
            counts.append([variant, str(len(rows)), f"{mean_gain:+.1f}", positive, str(better), str(worse)])
        report.sections.append(
            (
                "Where it helps: countries against zero-shot",
                "Per country, the paired difference in agreement against zero-shot on the same questions. "
                "'Clearly better/worse': the 95% interval of the difference excludes 0.",
                ["program", "countries", "mean gain (pp)", "gain > 0", "clearly better", "clearly worse"],
                counts,
            )
        )
    if not per_country.empty:
        wide = per_country.pivot(index="country", columns="variant", values="agreement_mean").reindex(columns=variants)
        cells = []
        for country, row in wide.iterrows():
            values = [f"{v:.1f}" if not math.isnan(v) else "-" for v in row]
            best = row.idxmax() if row.notna().any() else "-"
            gains = per_country[(per_country["country"] == country) & per_country["diff_vs_zero_shot"].notna()]
            gain = "" if gains.empty else f"{gains['diff_vs_zero_shot'].max():+.1f}"
            cells.append([str(country), *values, str(best), gain])
        report.sections.append(
            (
                "Per country",
                "Agreement (%) per country (intervals in the CSV summary and the gain plot).",
                ["country", *variants, "best", "best gain (pp)"],
                cells,
            )
        )
    topic = summarize(_by_program(frame[frame["variant"].isin(variants)]), ["topic", "variant"], ["agreement"])
    if not topic.empty:
        wide_t = topic.pivot(index="topic", columns="variant", values="agreement_mean").reindex(columns=variants)
        report.sections.append(
            (
                "Per topic",
                "Agreement (%) per topic of the survey.",
                ["topic", *variants],
                [[str(t), *(f"{v:.1f}" if not math.isnan(v) else "-" for v in row)] for t, row in wide_t.iterrows()],
            )
        )
    curves = k_curves(frame)
    if not curves.empty:
        report.sections.append(
            (
                "Agreement against k",
                "Programs run with several k, on the countries that have every k; k 0 rows are the "
                "demonstration-free programs on the same countries.",
                ["program", "k", "countries", "agreement %"],
                [
                    [
                        str(r.program),
                        str(int(r.k)),
                        str(int(r.n_countries)),
                        fmt_ci(r.agreement_mean, r.agreement_ci_low, r.agreement_ci_high),
                    ]
                    for r in curves.itertuples()
                ],
            )
        )
    report.robustness = robust
    if not robust.empty:
        report.sections.extend(robustness_sections(robust))
    failed = frame[~ok]
    if not failed.empty:
        errors = failed["error"].fillna("(no message)").astype(str).str.slice(0, 160).value_counts().head(8)
        report.sections.append(
            (
                "Failed probes",
                "Failures are counted here and left out of every metric (never scored as wrong answers).",
                ["error", "probes"],
                [[e, str(n)] for e, n in errors.items()],
            )
        )
    if baseline is not None:
        gains = per_country.rename(
            columns={
                "variant": "program",
                "diff_vs_zero_shot": "mean_diff",
                "diff_ci_low": "ci_low",
                "diff_ci_high": "ci_high",
            }
        )
        gains = gains[gains["mean_diff"].notna()]
        shown = [v for v in variants if v != baseline]
        figure = plot_country_gains(gains[gains["program"].isin(shown)], shown)
        if figure is not None:
            report.figures.append(figure)
    for figure in (plot_topic_heatmap(frame, variants), plot_k_curve(curves), plot_robustness(robust)):
        if figure is not None:
            report.figures.append(figure)
    return report


def _constant_answer_reference(frame: pd.DataFrame) -> tuple[str, str] | None:
    """For the binary protocol: the agreement a model that always answers "agree" (or "disagree") would get."""
    if "protocol" not in frame.columns or set(frame["protocol"].dropna().astype(str)) != {"binary"}:
        return None
    pairs = frame.drop_duplicates(["country", "question_id"])
    if pairs.empty or "country_majority" not in pairs.columns:
        return None
    agree = float((pairs["country_majority"].astype(str) == "agree").mean() * 100)
    return (
        "constant-answer reference",
        f"the country's majority agrees on {agree:.1f}% of the (country, question) pairs: a model that always "
        f"answers 'agree' would score {agree:.1f}% agreement, one that always disagrees {100 - agree:.1f}%",
    )


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(report: Report) -> str:
    """The report as Markdown; figures are linked as the PNG files written next to it."""
    out = [f"# {report.title}", ""]
    out += [f"- **{k}**: {v}" for k, v in report.facts]
    for title, note, header, rows in report.sections:
        out += ["", f"## {title}", "", note, "", _md_table(header, rows)]
    if report.figures:
        out += ["", "## Plots", ""]
        for fig in report.figures:
            out += [f"![{fig.caption}]({fig.name})", "", f"*{fig.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left}
th{background:#f2f2f2}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-style:italic;margin-bottom:1.5em}
.note{color:#555}
"""


def to_html(report: Report, probes: Mapping[str, Any] | None = None) -> str:
    """The report as one self-contained HTML page (inline CSS and script, plots as base64 PNG data URIs);
    with ``probes`` (:func:`selfalign.probe_view.probe_payload`), the per-probe view after the plots."""
    e = html.escape
    css = _CSS + (probe_css() if probes is not None else "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(report.title)}</title><style>{css}</style></head><body>",
        f"<h1>{e(report.title)}</h1><ul>",
        *(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in report.facts),
        "</ul>",
    ]
    if probes is not None:
        parts.append("<p><a href='#probes'>Per-probe view</a>: every probe, its prompt and distributions.</p>")
    for title, note, header, rows in report.sections:
        parts.append(f"<h2>{e(title)}</h2><p class='note'>{e(note)}</p><table><thead><tr>")
        parts += [f"<th>{e(str(h))}</th>" for h in header]
        parts.append("</tr></thead><tbody>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>")
        parts.append("</tbody></table>")
    if report.figures:
        parts.append("<h2>Plots</h2>")
        for fig in report.figures:
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(
                f"<figure><img alt='{e(fig.caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{e(fig.caption)}</figcaption></figure>"
            )
    if probes is not None:
        parts.append(probe_section(probes))
    parts.append("</body></html>")
    return "\n".join(parts)


def render_report(run_dir: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html``, the plot PNGs and ``summary.csv`` from the run table in ``run_dir``.

    Reads only the stored run table (``runs.parquet`` or ``runs.csv``) and the prompts stored beside it
    (``prompts.jsonl.gz``, absent for older runs); ``out_dir`` defaults to ``run_dir``. Returns the Markdown and
    HTML paths.
    """
    table = load_run_table(run_dir)
    probes = probe_payload(table, read_prompts(run_dir))
    target = Path(out_dir) if out_dir is not None else Path(run_dir)
    if target.suffix in (".parquet", ".csv"):
        target = target.parent
    target.mkdir(parents=True, exist_ok=True)
    report = build_report(table)
    for fig in report.figures:
        (target / fig.name).write_bytes(fig.png)
    md_path, html_path = target / REPORT_MD, target / REPORT_HTML
    md_path.write_text(to_markdown(report), encoding="utf-8")
    html_path.write_text(to_html(report, probes), encoding="utf-8")
    assert report.summary is not None
    report.summary.to_csv(target / SUMMARY_CSV, index=False)
    if report.robustness is not None and not report.robustness.empty:
        report.robustness.to_csv(target / ROBUSTNESS_CSV, index=False)
    return md_path, html_path
