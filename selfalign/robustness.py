"""How robust a measurement is: each program's metrics under the perturbations of its prompt.

A run with perturbation axes (:mod:`selfalign.perturbations`: option order, answer words, template) has rows
of the same probe under several perturbations. :func:`robustness_frame` summarises them per program (the
``variant`` of :func:`selfalign.report.analysis_table`):

- scope ``perturbation``, one row per program and perturbation: counts; agreement (%), JS and Wasserstein
  similarity with 95% cluster-bootstrap intervals over questions; against the *unperturbed* prompt on the
  same probes, the change in agreement (paired, pp, with interval) and the share of probes whose answer (the
  most likely option's code) flips, with a bootstrap interval; and the gain in agreement over zero-shot
  under that same perturbation (:func:`selfalign.metrics.paired_difference` through
  :func:`~selfalign.metrics.compare_to_baseline`: interval and permutation p-value);
- scope ``program``, one row per program: the mean, standard deviation, minimum and maximum of each metric
  across its perturbations (beside the standard deviation across countries under the unperturbed prompt, for
  scale), the mean and largest flip share, and whether its gain over zero-shot holds under every
  perturbation (``gain_holds``: the interval's lower end is above 0 under each; ``n_gain_holds`` of
  ``n_perturbations``).

Rows of older runs (without the perturbation columns) count as unperturbed, so such a run has one perturbation
and nothing to summarise (:func:`has_perturbations` is false).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from selfalign.metrics import METRICS, PAIR_KEYS, bootstrap_ci, compare_to_baseline, paired_difference, summarize
from selfalign.perturbations import DEFAULTS, OPTION_ORDERS, PERTURBATION_COLUMNS, UNPERTURBED, Perturbation
from selfalign.prompts import ANSWER_WORD_SETS, TEMPLATE_NAMES

ROBUSTNESS_CSV = "robustness.csv"
REFERENCE = UNPERTURBED.label
_FILLED_WITH_NAN = (  # the columns of scope perturbation that a table without flips or a baseline lacks
    *("flip_n", "flip_pct", "flip_ci_low", "flip_ci_high"),
    *("delta_vs_unperturbed", "delta_ci_low", "delta_ci_high", "delta_p"),
    *("gain_vs_baseline", "gain_ci_low", "gain_ci_high", "gain_p", "gain_n_pairs"),
)


def with_perturbations(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every perturbation column (missing ones and missing values: unperturbed) and a
    ``perturbation`` label (:attr:`Perturbation.label`: ``"unperturbed"``, ``"order=reversed"``, ...)."""
    out = frame.copy()
    for col in PERTURBATION_COLUMNS:
        values = out[col].astype(object) if col in out.columns else pd.Series([None] * len(out), index=out.index)
        out[col] = values.where(values.notna(), DEFAULTS[col]).astype(str)
    combos = out[list(PERTURBATION_COLUMNS)].drop_duplicates()
    labels = {tuple(row): Perturbation(*row).label for row in combos.itertuples(index=False)}
    out["perturbation"] = [labels[tuple(row)] for row in out[list(PERTURBATION_COLUMNS)].itertuples(index=False)]
    return out


def perturbation_order(labels: Sequence[str]) -> list[str]:
    """Perturbation labels in a stable order: unperturbed first, then single changes by axis (order, words,
    template) in the order the values are defined, then combinations."""
    known = {
        "order": [o.partition("[")[0] for o in OPTION_ORDERS],
        "words": list(ANSWER_WORD_SETS),
        "template": list(TEMPLATE_NAMES),
    }
    axes = list(known)

    def rank(label: str) -> tuple[int, int, int, int, str]:
        if label == REFERENCE:
            return (0, 0, 0, 0, "")
        axis, _, value = label.split(" + ")[0].partition("=")
        name, _, seed = value.partition(":")
        values = known.get(axis, [])
        return (
            1 + label.count(" + "),
            axes.index(axis) if axis in axes else len(axes),
            values.index(name) if name in values else len(values),
            int(seed) if seed.isdigit() else 0,
            label,
        )

    return sorted(dict.fromkeys(labels), key=rank)


def has_perturbations(table: pd.DataFrame) -> bool:
    """Whether the table holds rows under more than one perturbation."""
    if not any(c in table.columns for c in PERTURBATION_COLUMNS):
        return False
    return with_perturbations(table)["perturbation"].nunique() > 1


def _keys(frame: pd.DataFrame) -> list[str]:
    return [c for c in PAIR_KEYS if c in frame.columns]


def _flips(part: pd.DataFrame, reference: pd.DataFrame, n_boot: int, n_perm: int) -> dict[str, float]:
    """Flip share and agreement change of ``part`` against ``reference`` (one program), on the same probes."""
    keys = _keys(part)
    left = part[part["ok"].astype(bool) & part["model_choice"].notna()]
    right = reference[reference["ok"].astype(bool) & reference["model_choice"].notna()]
    right = right[[*keys, "model_choice", "agreement"]].drop_duplicates(keys)
    paired = left.merge(right, on=keys, how="inner", suffixes=("", "_ref"))
    if paired.empty:
        return {}
    clusters = paired["question_id"].to_numpy()
    flipped = (paired["model_choice"].astype(str) != paired["model_choice_ref"].astype(str)).to_numpy(dtype=float)
    rate, low, high = bootstrap_ci(flipped * 100, clusters, n_boot=n_boot)
    delta = paired_difference(
        paired["agreement"].to_numpy(dtype=float) * 100,
        paired["agreement_ref"].to_numpy(dtype=float) * 100,
        clusters,
        n_boot=n_boot,
        n_perm=n_perm,
    )
    return {
        "flip_n": len(paired),
        "flip_pct": rate,
        "flip_ci_low": low,
        "flip_ci_high": high,
        "delta_vs_unperturbed": delta.mean_diff,
        "delta_ci_low": delta.ci_low,
        "delta_ci_high": delta.ci_high,
        "delta_p": delta.p_value,
    }


def robustness_frame(
    frame: pd.DataFrame, *, baseline: str = "zero-shot", n_boot: int = 2000, n_perm: int = 10000
) -> pd.DataFrame:
    """The robustness summary of an analysis table (a run table with ``variant``; see the module docstring).

    Columns of both scopes: ``scope``, ``variant``, ``perturbation`` (``"all"`` for scope ``program``) and
    ``n_perturbations``; scope ``perturbation``: ``n_probes``, ``n_failed``, ``<metric>_mean`` /
    ``_ci_low`` / ``_ci_high``, ``flip_n``, ``flip_pct`` / ``flip_ci_low`` / ``flip_ci_high`` (percent of
    probes), ``delta_vs_unperturbed`` / ``delta_ci_low`` / ``delta_ci_high`` / ``delta_p`` (pp),
    ``gain_vs_baseline`` / ``gain_ci_low`` / ``gain_ci_high`` / ``gain_p`` / ``gain_n_pairs`` (pp); scope
    ``program``: ``<metric>_mean`` (mean over perturbations), ``<metric>_sd``, ``_min``, ``_max``,
    ``agreement_sd_countries``, ``flip_pct`` (mean over the perturbed prompts), ``flip_pct_max``,
    ``gain_weakest_under`` (the perturbation whose gain interval reaches lowest) with its ``gain_vs_baseline``,
    ``gain_ci_low``, ``gain_ci_high`` and ``gain_p``, ``n_gain_holds`` and ``gain_holds``.
    Empty when the table has a single perturbation.
    """
    frame = with_perturbations(frame)
    labels = perturbation_order(frame["perturbation"].unique())
    if len(labels) < 2:
        return pd.DataFrame()
    frame = frame.assign(program=frame["variant"])
    variants = list(dict.fromkeys(frame["variant"]))
    has_baseline = baseline in set(variants)
    rows: list[dict[str, object]] = []
    for label in labels:
        part = frame[frame["perturbation"] == label]
        summary = summarize(part, ["variant"], n_boot=n_boot).set_index("variant")
        gains = pd.DataFrame()
        base_ok = part[(part["variant"] == baseline) & part["ok"].astype(bool) & part["agreement"].notna()]
        if has_baseline and not base_ok.empty:
            gains = compare_to_baseline(part, baseline, n_boot=n_boot, n_perm=n_perm).set_index("program")
        for variant in variants:
            if variant not in summary.index:
                continue
            s = summary.loc[variant]
            row: dict[str, object] = {"scope": "perturbation", "variant": variant, "perturbation": label}
            row.update(n_probes=int(s["n_probes"]), n_failed=int(s["n_failed"]))
            for metric in METRICS:
                for stat in ("mean", "ci_low", "ci_high"):
                    row[f"{metric}_{stat}"] = float(s[f"{metric}_{stat}"])
            if label != REFERENCE:
                reference = frame[(frame["perturbation"] == REFERENCE) & (frame["variant"] == variant)]
                row.update(_flips(part[part["variant"] == variant], reference, n_boot, n_perm))
            if variant in gains.index:
                g = gains.loc[variant]
                row.update(
                    gain_vs_baseline=float(g["mean_diff"]),
                    gain_ci_low=float(g["ci_low"]),
                    gain_ci_high=float(g["ci_high"]),
                    gain_p=float(g["p_value"]),
                    gain_n_pairs=int(g["n_pairs"]),
                )
            rows.append(row)
    per = pd.DataFrame(rows)
    for col in _FILLED_WITH_NAN:
        if col not in per.columns:
            per[col] = math.nan
    per["n_perturbations"] = per.groupby("variant")["perturbation"].transform("nunique")
    programs = [_program_row(variant, per[per["variant"] == variant], frame) for variant in variants]
    return pd.concat([per, pd.DataFrame(programs)], ignore_index=True)


def _program_row(variant: str, rows: pd.DataFrame, frame: pd.DataFrame) -> dict[str, object]:
    out: dict[str, object] = {
        "scope": "program",
        "variant": variant,
        "perturbation": "all",
        "n_perturbations": int(rows["perturbation"].nunique()),
        "n_probes": int(rows["n_probes"].sum()),
        "n_failed": int(rows["n_failed"].sum()),
    }
    for metric in METRICS:
        means = rows[f"{metric}_mean"].dropna().to_numpy(dtype=float)
        out[f"{metric}_mean"] = float(means.mean()) if means.size else math.nan
        out[f"{metric}_sd"] = float(means.std(ddof=1)) if means.size > 1 else math.nan
        out[f"{metric}_min"] = float(means.min()) if means.size else math.nan
        out[f"{metric}_max"] = float(means.max()) if means.size else math.nan
    reference = frame[(frame["perturbation"] == REFERENCE) & (frame["variant"] == variant) & frame["ok"].astype(bool)]
    by_country = reference.groupby("country")["agreement"].mean().dropna() * 100
    out["agreement_sd_countries"] = float(by_country.std(ddof=1)) if len(by_country) > 1 else math.nan
    flips = rows["flip_pct"].dropna()
    out["flip_pct"] = float(flips.mean()) if not flips.empty else math.nan
    out["flip_pct_max"] = float(flips.max()) if not flips.empty else math.nan
    gains = rows.dropna(subset=["gain_vs_baseline"])
    if not gains.empty:
        worst = gains.loc[gains["gain_ci_low"].idxmin()]  # the perturbation where the gain is least sure
        out["gain_weakest_under"] = str(worst["perturbation"])
        for col in ("gain_vs_baseline", "gain_ci_low", "gain_ci_high", "gain_p"):
            out[col] = float(worst[col])
        out["n_gain_holds"] = int((gains["gain_ci_low"] > 0).sum())
        out["gain_holds"] = bool(len(gains) == len(rows) and (gains["gain_ci_low"] > 0).all())
    return out


def program_rows(robustness: pd.DataFrame) -> pd.DataFrame:
    """The scope ``program`` rows."""
    return robustness[robustness["scope"] == "program"] if not robustness.empty else robustness


def perturbation_rows(robustness: pd.DataFrame) -> pd.DataFrame:
    """The scope ``perturbation`` rows."""
    return robustness[robustness["scope"] == "perturbation"] if not robustness.empty else robustness


def spread(mean: float, sd: float, low: float, high: float, digits: int = 1) -> str:
    """``"62.3 ± 4.1 [55.0, 68.2]"`` (mean ± SD across perturbations, [min, max]); ``"-"`` for NaN."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    sd_text = "" if sd is None or np.isnan(sd) else f" ± {sd:.{digits}f}"
    return f"{mean:.{digits}f}{sd_text} [{low:.{digits}f}, {high:.{digits}f}]"
