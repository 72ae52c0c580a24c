"""Evaluation maths: per-probe metrics, cluster-bootstrap intervals and paired program comparisons.

Per-probe metrics compare the model's probabilities with a country's answer shares, both given as
vectors in the question's option order (for the binary protocol: 2-vectors ``(agree, disagree)``):

- :func:`agreement`: does the model's most likely option match the country's majority option
  (the paper's metric; ties split, see the function);
- :func:`js_similarity`: 1 - Jensen-Shannon distance (base-2), in [0, 1];
- :func:`wasserstein_similarity`: 1 - normalised earth mover's distance, for ordinal scales.

Aggregation works on a run table (one row per probe, columns written by the runner). Questions are the
unit of resampling: the rows of one question (across countries, languages, seeds) are correlated, so
confidence intervals come from a bootstrap over question ids (:func:`bootstrap_ci`) and program-vs-baseline
tests from sign flips of per-question differences (:func:`paired_difference`). Rows whose probe failed
(``ok`` False) are counted in ``n_failed`` and left out of every mean: a failure is never scored as a
wrong answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from selfalign.errors import UnknownChoiceError

SUM_TOLERANCE = 1e-6
TIE_TOLERANCE = 1e-12
METRICS: tuple[str, ...] = ("agreement", "js_similarity", "wasserstein_similarity")
PERCENT_METRICS: frozenset[str] = frozenset({"agreement"})
PAIR_KEYS: tuple[str, ...] = (
    "model",
    "survey",
    "country",
    "language",
    "demo_language",
    "protocol",
    "question_id",
    "seed",
)
OPTIONAL_PAIR_KEYS: tuple[str, ...] = ("option_order", "answer_words", "template")
"""Pairing keys used where the table has them: a row's perturbation (see :mod:`selfalign.perturbations`)."""
Vector = Sequence[float] | np.ndarray
"""A probability vector or a column of per-probe values."""
# Upper bound on the number of cells of one resampling block (rows x clusters), to bound memory.
_BLOCK_CELLS = 4_000_000


# --- per-probe metrics ---------------------------------------------------------------------------------


def _check_pair(p: Vector, q: Vector) -> tuple[list[float], list[float]]:
    """Validate two probability vectors of the same question and return them renormalised, as lists.

    Per-probe maths runs on plain floats: the vectors have 2 to 11 entries, where NumPy's per-call overhead
    costs more than the arithmetic (the runner scores every row as it arrives).
    """
    a = np.asarray(p, dtype=float)
    b = np.asarray(q, dtype=float)
    checked = []
    for name, v in (("model probabilities", a), ("country shares", b)):
        if v.ndim != 1:
            raise ValueError(f"{name} must be a 1-D vector, got shape {v.shape}")
        if v.size < 2:
            raise ValueError(f"{name} need at least 2 options, got {v.size}")
        values: list[float] = v.tolist()
        if not all(math.isfinite(x) for x in values):
            raise ValueError(f"{name} contain NaN or infinite values: {values}")
        if any(x < 0 for x in values):
            raise ValueError(f"{name} contain negative values: {values}")
        total = math.fsum(values)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ValueError(f"{name} sum to {total:.9f}, not 1 (tolerance {SUM_TOLERANCE})")
        checked.append([x / total for x in values])
    if a.size != b.size:
        raise ValueError(f"model probabilities have {a.size} options but country shares have {b.size}")
    return checked[0], checked[1]


def _argmax_set(v: list[float]) -> list[bool]:
    """Mask of the indices within TIE_TOLERANCE of the maximum."""
    top = max(v) - TIE_TOLERANCE
    return [x >= top for x in v]


def agreement(model_probs: Vector, country_shares: Vector) -> float:
    """The paper's agreement: whether the model's top option is the country's top option.

    Tie rule: with ``M`` the set of options at the model's maximum probability and ``C`` the set at the
    country's maximum share (values within 1e-12 of the maximum count as tied),
    ``agreement = |M ∩ C| / |M|``. So a clean hit scores 1.0, a miss 0.0, and a model that splits its
    maximum evenly over two options of which one is a country maximum scores 0.5 - the expected score of
    breaking the model's tie at random. A tie in the country's shares makes each of the tied options right.
    """
    return _agreement(*_check_pair(model_probs, country_shares))


def _agreement(p: list[float], q: list[float]) -> float:
    m = _argmax_set(p)
    c = _argmax_set(q)
    return sum(x and y for x, y in zip(m, c, strict=True)) / sum(m)


def js_similarity(p: Vector, q: Vector) -> float:
    """``1 - JS distance`` with base-2 logarithms, in [0, 1].

    The JS distance is the square root of the Jensen-Shannon divergence
    ``JSD = (KL(p||m) + KL(q||m)) / 2`` with ``m = (p + q) / 2``; terms with a zero share are 0
    (``0 * log 0 = 0``). Identical distributions give 1.0, distributions with disjoint support 0.0.
    """
    return _js_similarity(*_check_pair(p, q))


def _js_similarity(a: list[float], b: list[float]) -> float:
    m = [(x + y) / 2 for x, y in zip(a, b, strict=True)]
    jsd = 0.5 * _kl2(a, m) + 0.5 * _kl2(b, m)
    return min(1.0, max(0.0, 1.0 - math.sqrt(max(jsd, 0.0))))


def _kl2(p: list[float], m: list[float]) -> float:
    """KL(p || m) in bits, skipping p == 0 terms (m > 0 wherever p > 0 since m = (p + q) / 2)."""
    return math.fsum(x * math.log2(x / y) for x, y in zip(p, m, strict=True) if x > 0)


def wasserstein_similarity(p: Vector, q: Vector) -> float:
    """``1 - W1 / (N - 1)`` for an ordinal scale of N options with unit spacing, in [0, 1].

    ``W1 = sum_{i=1}^{N-1} |CDF_p(i) - CDF_q(i)|`` is the earth mover's distance between the two
    distributions placed on positions 1..N; dividing by its maximum ``N - 1`` (all mass at opposite ends)
    makes the score 1.0 for identical distributions and 0.0 for one-hots at the two ends.
    Only meaningful when the options are ordered; the value depends on the option order.
    """
    return _wasserstein_similarity(*_check_pair(p, q))


def _wasserstein_similarity(a: list[float], b: list[float]) -> float:
    cdf_a = cdf_b = gaps = 0.0
    for x, y in zip(a[:-1], b[:-1], strict=True):
        cdf_a += x
        cdf_b += y
        gaps += abs(cdf_a - cdf_b)
    return min(1.0, max(0.0, 1.0 - gaps / (len(a) - 1)))


def probe_metrics(model_probs: Vector, country_shares: Vector, ordinal: bool) -> dict[str, float]:
    """All per-probe metrics: agreement, js_similarity and wasserstein_similarity (NaN if not ordinal)."""
    p, q = _check_pair(model_probs, country_shares)  # validated once for the three
    return {
        "agreement": _agreement(p, q),
        "js_similarity": _js_similarity(p, q),
        "wasserstein_similarity": _wasserstein_similarity(p, q) if ordinal else float("nan"),
    }


# --- cluster bootstrap ---------------------------------------------------------------------------------


def _clustered(values: Vector, clusters: Sequence[object] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop NaN values and return (values, cluster codes 0..G-1, per-cluster row counts)."""
    v = np.asarray(values, dtype=float)
    c = np.asarray(clusters)
    if v.ndim != 1 or c.ndim != 1 or v.size != c.size:
        raise ValueError(f"values and clusters must be 1-D of the same length, got {v.shape} and {c.shape}")
    keep = ~np.isnan(v)
    v, c = v[keep], c[keep]
    if v.size == 0:
        return v, np.zeros(0, dtype=np.intp), np.zeros(0, dtype=float)
    _, codes = np.unique(c.astype(str) if c.dtype == object else c, return_inverse=True)
    codes = codes.reshape(-1)
    return v, codes, np.bincount(codes).astype(float)


def _check_level(level: float, n: int, what: str) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if n < 1:
        raise ValueError(f"{what} must be at least 1, got {n}")


def _bootstrap_stats(sums: np.ndarray, counts: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Row means of ``n_boot`` resamples of the G clusters (drawn with replacement, G per resample)."""
    g = sums.size
    out = np.empty(n_boot)
    block = max(1, _BLOCK_CELLS // g)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, g, size=(stop - start, g))
        out[start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    return out


def bootstrap_ci(
    values: Vector,
    clusters: Sequence[object] | np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Mean of ``values`` and a percentile cluster-bootstrap interval: ``(mean, ci_low, ci_high)``.

    Each resample draws as many clusters as there are (e.g. question ids), with replacement; its statistic
    is the mean over all rows of the drawn clusters, a cluster counting as often as it was drawn. The
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the ``n_boot`` statistics.
    NaN values are dropped first; with no values left the result is all NaN. With a single cluster the
    interval collapses to the mean (there is no between-cluster variation to resample).
    """
    _check_level(level, n_boot, "n_boot")
    v, codes, counts = _clustered(values, clusters)
    if v.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    sums = np.bincount(codes, weights=v)
    stats = _bootstrap_stats(sums, counts, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return (float(v.mean()), float(lo), float(hi))


class PairedResult(NamedTuple):
    """A program-minus-baseline comparison on the same probes."""

    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_pairs: int


def paired_difference(
    a: Vector,
    b: Vector,
    clusters: Sequence[object] | np.ndarray,
    *,
    n_boot: int = 2000,
    n_perm: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedResult:
    """Mean of ``a - b`` over aligned probes, its cluster-bootstrap CI and a sign-flip permutation p-value.

    ``a`` and ``b`` are per-probe values of two programs on the same probes (row i of both is the same
    probe); pairs where either is NaN are dropped. ``mean_diff`` is the mean of ``d = a - b`` over the
    pairs and ``(ci_low, ci_high)`` its percentile cluster bootstrap (:func:`bootstrap_ci`).

    The p-value is two-sided, for the null hypothesis that each cluster's differences are symmetric
    around 0 (the programs are exchangeable within a question): with ``D_g`` the sum of ``d`` over
    cluster g and N the number of pairs, the statistic ``T(s) = sum_g s_g D_g / N`` (s_g = ±1; all +1
    gives ``mean_diff``) is recomputed for ``n_perm`` random sign vectors, i.e. each cluster's mean
    difference is flipped as a whole, weighted by its number of pairs. ``p = (count + 1) / (n_perm + 1)``
    where count is the number of flips with ``|T(s)| >= |mean_diff|`` (up to 1e-12), so p is never 0;
    with G clusters no p below about ``2 / 2**G`` can be reached. Identical inputs give p = 1.
    """
    _check_level(level, n_perm, "n_perm")
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same shape, got {x.shape} and {y.shape}")
    d = x - y
    mean, lo, hi = bootstrap_ci(d, clusters, n_boot=n_boot, seed=seed, level=level)
    v, codes, _ = _clustered(d, clusters)
    if v.size == 0:
        return PairedResult(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    weights = np.bincount(codes, weights=v) / v.size  # D_g / N
    observed = abs(float(weights.sum()))
    rng = np.random.default_rng([seed, 1])
    g = weights.size
    count = 0
    block = max(1, _BLOCK_CELLS // g)
    for start in range(0, n_perm, block):
        stop = min(n_perm, start + block)
        signs = rng.integers(0, 2, size=(stop - start, g), dtype=np.int8) * 2 - 1
        flipped = np.abs(signs @ weights)
        count += int(np.count_nonzero(flipped >= observed - 1e-12))
    p_value = (count + 1) / (n_perm + 1)
    return PairedResult(mean, lo, hi, float(p_value), int(v.size))


# --- run tables ----------------------------------------------------------------------------------------


def _require_columns(table: pd.DataFrame, columns: Sequence[str]) -> None:
    for col in columns:
        if col not in table.columns:
            raise UnknownChoiceError("column", col, table.columns, hint="a column of the run table")


def _ok_mask(table: pd.DataFrame) -> pd.Series:
    """The ``ok`` column as booleans (missing values count as failed)."""
    return table["ok"].fillna(False).astype(bool)


def _groups(table: pd.DataFrame, by: Sequence[str]) -> list[tuple[tuple[object, ...], pd.DataFrame]]:
    if not by:
        return [((), table)]
    return [
        (key if isinstance(key, tuple) else (key,), frame)
        for key, frame in table.groupby(list(by), dropna=False, sort=True)
    ]


def summarize(
    table: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str] = METRICS,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per group of ``by`` with counts and each metric's mean and cluster-bootstrap CI.

    Columns: the ``by`` columns, ``n_probes`` (all rows), ``n_ok``, ``n_failed`` (rows with ``ok`` False,
    counted but left out of every mean), and per metric ``<metric>_mean``, ``<metric>_ci_low``,
    ``<metric>_ci_high`` and ``<metric>_n`` (ok rows with a value; e.g. Wasserstein is NaN on nominal
    questions). Clusters are question ids. Agreement is reported in percent (0-100), the similarities in
    [0, 1]. Every group uses the same bootstrap seed, so a group's interval does not depend on the others.
    """
    by = list(by)
    _require_columns(table, [*by, "ok", "question_id", *metrics])
    rows: list[dict[str, object]] = []
    for key, frame in _groups(table, by):
        ok = _ok_mask(frame)
        good = frame[ok]
        row: dict[str, object] = dict(zip(by, key, strict=True))
        row.update(n_probes=len(frame), n_ok=int(ok.sum()), n_failed=int((~ok).sum()))
        for metric in metrics:
            values = good[metric].to_numpy(dtype=float)
            scale = 100.0 if metric in PERCENT_METRICS else 1.0
            mean, lo, hi = bootstrap_ci(
                values * scale, good["question_id"].to_numpy(), n_boot=n_boot, seed=seed, level=level
            )
            row.update(
                {
                    f"{metric}_mean": mean,
                    f"{metric}_ci_low": lo,
                    f"{metric}_ci_high": hi,
                    f"{metric}_n": int(np.count_nonzero(~np.isnan(values))),
                }
            )
        rows.append(row)
    columns = [*by, "n_probes", "n_ok", "n_failed"] + [
        f"{m}_{s}" for m in metrics for s in ("mean", "ci_low", "ci_high", "n")
    ]
    return pd.DataFrame(rows, columns=columns)


def _pair_keys(baseline: pd.DataFrame) -> list[str]:
    """The pairing keys, relaxed where the baseline was run without them.

    ``demo_language`` is dropped when the baseline has none (e.g. zero-shot), and ``seed`` when the
    baseline was run with a single seed (its one run is the reference for every seed of the program).
    """
    keys = list(PAIR_KEYS) + [c for c in OPTIONAL_PAIR_KEYS if c in baseline.columns]
    if baseline["demo_language"].isna().all():
        keys.remove("demo_language")
    if baseline["seed"].nunique(dropna=False) <= 1:
        keys.remove("seed")
    return keys


def compare_to_baseline(
    table: pd.DataFrame,
    baseline: str,
    by: Sequence[str] = (),
    metric: str = "agreement",
    *,
    n_boot: int = 2000,
    n_perm: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Each non-baseline program against ``baseline`` on the same probes, per group of ``by``.

    Program rows are paired with baseline rows on (model, survey, country, language, demo_language,
    protocol, question_id, seed, and the perturbation columns where the table has them) - not on ``k`` or
    ``program``, so a zero-shot baseline run at k = 0 serves every k. Where the baseline has several rows
    for one key (e.g. several k), their mean is the reference. If the baseline has no ``demo_language`` at
    all it pairs with every demo language, and if it was run with a single seed it pairs with every seed.
    Only ok rows with a value of ``metric`` are paired on either side; program rows without a baseline
    partner are left out (see ``n_pairs``).

    Columns: ``program``, the ``by`` columns, ``n_pairs``, ``mean_program``, ``mean_baseline``,
    ``mean_diff``, ``ci_low``, ``ci_high``, ``p_value`` (see :func:`paired_difference`; clusters are
    question ids). Agreement is in percent, so its differences are in percentage points.
    """
    by = [c for c in by if c != "program"]
    _require_columns(table, [*PAIR_KEYS, *by, "program", "ok", metric])
    programs = table["program"].astype(str)
    if baseline not in set(programs):
        raise UnknownChoiceError("program", baseline, set(programs), hint="baseline not in the run table")
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    base_rows = table[(programs == baseline) & _ok_mask(table) & table[metric].notna()]
    columns = [
        "program",
        *by,
        "n_pairs",
        "mean_program",
        "mean_baseline",
        "mean_diff",
        "ci_low",
        "ci_high",
        "p_value",
    ]
    if base_rows.empty:
        raise ValueError(f"baseline program {baseline!r} has no ok rows with a value of {metric!r}")
    keys = _pair_keys(base_rows)
    reference = base_rows.groupby(keys, dropna=False, sort=False)[metric].mean().rename("_baseline").reset_index()
    rows: list[dict[str, object]] = []
    for key, frame in _groups(table[programs != baseline], ["program", *by]):
        frame = frame[_ok_mask(frame) & frame[metric].notna()]
        paired = frame.merge(reference, on=keys, how="inner")
        a = paired[metric].to_numpy(dtype=float) * scale
        b = paired["_baseline"].to_numpy(dtype=float) * scale
        result = paired_difference(
            a, b, paired["question_id"].to_numpy(), n_boot=n_boot, n_perm=n_perm, seed=seed, level=level
        )
        row: dict[str, object] = dict(zip(["program", *by], key, strict=True))
        row.update(
            n_pairs=result.n_pairs,
            mean_program=float(a.mean()) if a.size else float("nan"),
            mean_baseline=float(b.mean()) if b.size else float("nan"),
            mean_diff=result.mean_diff,
            ci_low=result.ci_low,
            ci_high=result.ci_high,
            p_value=result.p_value,
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)
