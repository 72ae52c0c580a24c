"""Tests of selfalign.metrics against hand-computed values (the arithmetic is in the comments)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from selfalign.errors import UnknownChoiceError
from selfalign.metrics import (
    agreement,
    bootstrap_ci,
    compare_to_baseline,
    js_similarity,
    paired_difference,
    probe_metrics,
    summarize,
    wasserstein_similarity,
)

# Andorra's real WVS7 shares for Q1 (importance of family), options 1-4, from the reference data set
# (/work/shared/data/wvs7/country_distributions.csv, weighted shares over substantive answers).
AND_Q1 = [0.8954183266932271, 0.09661354581673307, 0.0049800796812749, 0.00298804780876494]


# --- agreement -------------------------------------------------------------------------------------------


def test_agreement_hit_and_miss() -> None:
    # model max at option 0, country max at option 0 -> |{0} & {0}| / |{0}| = 1
    assert agreement([0.6, 0.3, 0.1], [0.5, 0.3, 0.2]) == 1.0
    # model max at option 1, country max at option 0 -> 0 / 1
    assert agreement([0.1, 0.6, 0.3], [0.5, 0.3, 0.2]) == 0.0
    # binary protocol (agree, disagree): model disagrees, country agrees -> 0
    assert agreement([0.3, 0.7], [0.62, 0.38]) == 0.0
    # real figures: Andorra's majority is option 1 ("very important"), model one-hot on it -> 1
    assert agreement([1.0, 0.0, 0.0, 0.0], AND_Q1) == 1.0


def test_agreement_ties() -> None:
    # model tie {0, 1}, country max {0} -> |{0}| / |{0, 1}| = 1/2
    assert agreement([0.4, 0.4, 0.2], [0.5, 0.3, 0.2]) == 0.5
    # model {0}, country tie {0, 1} -> 1/1 (either tied country option counts as right)
    assert agreement([0.7, 0.2, 0.1], [0.4, 0.4, 0.2]) == 1.0
    # model {2}, country tie {0, 1} -> 0
    assert agreement([0.1, 0.2, 0.7], [0.4, 0.4, 0.2]) == 0.0
    # model uniform {0, 1, 2}, country tie {0, 1} -> |{0, 1}| / 3 = 2/3
    assert agreement([1 / 3, 1 / 3, 1 / 3], [0.45, 0.45, 0.1]) == pytest.approx(2 / 3, abs=1e-15)
    # 0.5 vs 0.5 - 1e-13 is a tie (tolerance 1e-12): model {0, 1}, country {1} -> 1/2
    assert agreement([0.5, 0.5 - 1e-13], [0.2, 0.8]) == 0.5
    # 0.5 + 1e-9 vs 0.5 - 1e-9 is not a tie: model {0}, country {1} -> 0
    assert agreement([0.5 + 1e-9, 0.5 - 1e-9], [0.2, 0.8]) == 0.0


# --- Jensen-Shannon ---------------------------------------------------------------------------------------


def test_js_similarity_identical_and_disjoint() -> None:
    assert js_similarity([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == pytest.approx(1.0, abs=1e-12)
    assert js_similarity(AND_Q1, AND_Q1) == pytest.approx(1.0, abs=1e-12)
    # m = (.5, .5); KL(p||m) = 1 * log2(1 / .5) = 1 = KL(q||m); JSD = 1; distance 1 -> similarity 0
    assert js_similarity([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.0, abs=1e-12)
    assert js_similarity([0.0, 0.0, 1.0], [1.0, 0.0, 0.0]) == pytest.approx(0.0, abs=1e-12)


def test_js_similarity_hand_computed() -> None:
    # p = (1, 0), q = (.5, .5): m = (.75, .25)
    # KL(p||m) = log2(1/.75) = 0.4150375; KL(q||m) = .5*log2(.5/.75) + .5*log2(.5/.25) = -0.2924813 + 0.5
    # = 0.2075187; JSD = (0.4150375 + 0.2075187) / 2 = 0.3112781; sqrt = 0.5579230; 1 - sqrt = 0.4420770
    assert js_similarity([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.4420770, abs=1e-6)
    # zero shares: p = (.5, .5, 0), q = (0, .5, .5): m = (.25, .5, .25)
    # KL(p||m) = .5*log2(2) + .5*log2(1) + 0 = .5 = KL(q||m); JSD = .5; 1 - sqrt(.5) = 0.2928932
    assert js_similarity([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(0.2928932, abs=1e-6)
    # real figures: model one-hot on option 1 vs Andorra Q1, m = (0.9477092, 0.0483068, 0.0024900, 0.0014940)
    # KL(p||m) = log2(1/0.9477092) = 0.0774837
    # KL(q||m) = 0.8954183*log2(0.8954183/0.9477092) + (0.0966135 + 0.0049801 + 0.0029880)*log2(2)
    #          = 0.8954183*(-0.0818739) + 0.1045817 = -0.0733116 + 0.1045817 = 0.0312701
    # JSD = (0.0774837 + 0.0312701) / 2 = 0.0543769; sqrt = 0.2331886; 1 - sqrt = 0.7668114
    assert js_similarity([1.0, 0.0, 0.0, 0.0], AND_Q1) == pytest.approx(0.76681, abs=1e-4)
    # symmetric
    assert js_similarity([0.5, 0.5], [1.0, 0.0]) == pytest.approx(js_similarity([1.0, 0.0], [0.5, 0.5]))


# --- Wasserstein ------------------------------------------------------------------------------------------


def test_wasserstein_similarity_hand_computed() -> None:
    # one-hots at the two ends of a 4-point scale: W1 = 1 + 1 + 1 = 3 = N - 1 -> 0
    assert wasserstein_similarity([1, 0, 0, 0], [0, 0, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    assert wasserstein_similarity([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)
    # N = 2: W1 = |CDF gap| = |.3 - .6| = .3; /(2 - 1) -> 1 - .3 = .7
    assert wasserstein_similarity([0.3, 0.7], [0.6, 0.4]) == pytest.approx(0.7, abs=1e-12)
    # CDFs (.5, 1, 1) vs (0, 0, .5): gaps .5 + 1 + .5 = 2; 2 / 3 -> 1 - 2/3 = 1/3
    assert wasserstein_similarity([0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]) == pytest.approx(1 / 3, abs=1e-12)
    # adjacent one-hots on a 5-point scale: W1 = 1; 1 - 1/4 = .75
    assert wasserstein_similarity([0, 1, 0, 0, 0], [0, 0, 1, 0, 0]) == pytest.approx(0.75, abs=1e-12)
    # real figures: one-hot on option 1 vs Andorra Q1; CDF_q = (0.8954183, 0.9920319, 0.9970120)
    # W1 = 0.1045817 + 0.0079681 + 0.0029880 = 0.1155378; 1 - 0.1155378 / 3 = 0.9614874
    assert wasserstein_similarity([1.0, 0.0, 0.0, 0.0], AND_Q1) == pytest.approx(0.9614874, abs=1e-6)


def test_probe_metrics_keys_and_nominal() -> None:
    ordinal = probe_metrics([0.4, 0.4, 0.2], [0.5, 0.3, 0.2], ordinal=True)
    assert set(ordinal) == {"agreement", "js_similarity", "wasserstein_similarity"}
    assert ordinal["agreement"] == 0.5
    # CDFs (.4, .8) vs (.5, .8): W1 = .1; 1 - .1/2 = .95
    assert ordinal["wasserstein_similarity"] == pytest.approx(0.95)
    nominal = probe_metrics([0.4, 0.4, 0.2], [0.5, 0.3, 0.2], ordinal=False)
    assert np.isnan(nominal["wasserstein_similarity"])
    assert nominal["js_similarity"] == ordinal["js_similarity"]


@pytest.mark.parametrize(
    ("p", "q", "fragment"),
    [
        ([0.5, 0.5], [0.2, 0.3, 0.5], "options"),
        ([1.0], [1.0], "at least 2"),
        ([1.2, -0.2], [0.5, 0.5], "negative"),
        ([0.5, 0.4], [0.5, 0.5], "sum to"),
        ([float("nan"), 1.0], [0.5, 0.5], "NaN"),
        ([[0.5, 0.5]], [[0.5, 0.5]], "1-D"),
    ],
)
def test_metric_input_validation(p: list, q: list, fragment: str) -> None:
    for fn in (agreement, js_similarity, wasserstein_similarity):
        with pytest.raises(ValueError, match=fragment) as info:
            fn(p, q)
        assert "\n" not in str(info.value)


def test_shares_within_tolerance_accepted() -> None:
    # sums to 1 + 5e-7 (within 1e-6): accepted; 5e-7 > 1e-12 so no tie: model {1}, country {1} -> 1
    assert agreement([0.5, 0.5 + 5e-7], [0.2, 0.8]) == 1.0
    # model {0}, country {1} -> 0
    assert agreement([0.5 + 5e-7, 0.5], [0.2, 0.8]) == 0.0


# --- bootstrap --------------------------------------------------------------------------------------------


def test_bootstrap_ci_hand_computed() -> None:
    # cluster a = [1], cluster b = [0, 0, 0]; the row mean is 1/4 (not the mean of cluster means, 1/2).
    # Resamples of 2 clusters: {a, a} -> 1 (prob 1/4), {a, b} -> 1/4 (prob 1/2), {b, b} -> 0 (prob 1/4),
    # so the 2.5% / 97.5% quantiles are 0 and 1, and the 30% / 70% quantiles both 1/4.
    values = [1.0, 0.0, 0.0, 0.0]
    clusters = ["a", "b", "b", "b"]
    mean, lo, hi = bootstrap_ci(values, clusters)
    assert (mean, lo, hi) == (0.25, 0.0, 1.0)
    assert bootstrap_ci(values, clusters, level=0.4) == (0.25, 0.25, 0.25)


def test_bootstrap_ci_contains_mean_and_is_reproducible() -> None:
    rng = np.random.default_rng(7)
    clusters = np.repeat(np.arange(40), 25)
    values = rng.normal(rng.normal(0, 1, 40)[clusters], 0.5)
    mean, lo, hi = bootstrap_ci(values, clusters, seed=3)
    assert mean == pytest.approx(values.mean())
    assert lo < mean < hi
    assert bootstrap_ci(values, clusters, seed=3) == (mean, lo, hi)
    assert bootstrap_ci(values, clusters, seed=4) != (mean, lo, hi)


def test_bootstrap_ci_shrinks_with_more_clusters() -> None:
    rng = np.random.default_rng(0)

    def width(n_clusters: int) -> float:
        clusters = np.repeat(np.arange(n_clusters), 10)
        values = rng.normal(0, 1, n_clusters)[clusters] + rng.normal(0, 0.3, clusters.size)
        _, lo, hi = bootstrap_ci(values, clusters)
        return hi - lo

    w10, w100, w1000 = width(10), width(100), width(1000)
    # the width scales like 1/sqrt(clusters): about 1.2, 0.39, 0.12
    assert w10 > 2 * w100 > 4 * w1000


def test_bootstrap_ci_respects_clusters() -> None:
    # 20 clusters of 50 identical rows: resampling rows would pretend to have 1000 independent values
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(20), 50)
    values = rng.normal(0, 1, 20)[clusters]
    _, lo_c, hi_c = bootstrap_ci(values, clusters)
    _, lo_r, hi_r = bootstrap_ci(values, np.arange(values.size))
    assert (hi_c - lo_c) > 5 * (hi_r - lo_r)


def test_bootstrap_ci_edge_cases() -> None:
    # one cluster: nothing to resample between clusters -> the interval is the mean
    assert bootstrap_ci([0.0, 1.0, 1.0], ["q", "q", "q"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # NaN values are dropped: mean of (1, 0) = .5
    assert bootstrap_ci([1.0, np.nan, 0.0], ["a", "b", "c"])[0] == 0.5
    assert all(np.isnan(x) for x in bootstrap_ci([np.nan], ["a"]))
    assert all(np.isnan(x) for x in bootstrap_ci([], []))
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], ["a"])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], ["a"], level=1.5)


def test_bootstrap_ci_coverage() -> None:
    # 200 simulated studies of 30 clusters with true mean 0: the 95% interval should cover 0 about 95%
    # of the time (percentile bootstrap with 30 clusters runs slightly narrow).
    rng = np.random.default_rng(11)
    clusters = np.repeat(np.arange(30), 8)
    covered = 0
    for i in range(200):
        values = rng.normal(0, 1, 30)[clusters] + rng.normal(0, 1, clusters.size)
        _, lo, hi = bootstrap_ci(values, clusters, n_boot=500, seed=i)
        covered += lo <= 0 <= hi
    assert 0.85 <= covered / 200 <= 0.99


def test_bootstrap_ci_fast() -> None:
    rng = np.random.default_rng(2)
    values = rng.random(50_000)
    clusters = np.array([f"Q{i}" for i in rng.integers(1, 260, values.size)], dtype=object)
    start = time.perf_counter()
    bootstrap_ci(values, clusters, n_boot=2000)
    assert time.perf_counter() - start < 1.0


# --- paired difference ------------------------------------------------------------------------------------


def test_paired_difference_identical() -> None:
    a = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.5])
    result = paired_difference(a, a.copy(), ["q1", "q1", "q2", "q3", "q3", "q4"])
    assert result.mean_diff == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.p_value == 1.0
    assert result.n_pairs == 6


def test_paired_difference_hand_computed_p() -> None:
    # two clusters, all differences +1: T(s) = (s1*2 + s2*2) / 4 takes |T| = 1 for ++ and --, 0 otherwise,
    # so P(|T| >= 1) = 1/2; the Monte Carlo estimate with 10000 flips lies within a few 0.01 of it.
    r2 = paired_difference([1.0, 1.0, 1.0, 1.0], [0.0] * 4, ["a", "a", "b", "b"])
    assert r2.mean_diff == 1.0
    assert r2.p_value == pytest.approx(0.5, abs=0.03)
    # three clusters: only +++ and --- reach |T| = 1 -> p = 2/8 = .25
    r3 = paired_difference([1.0] * 3, [0.0] * 3, ["a", "b", "c"])
    assert r3.p_value == pytest.approx(0.25, abs=0.03)
    # (count + 1) / (n_perm + 1): with n_perm = 9 and every flip as extreme as observed (d = 0), p = 1
    assert paired_difference([0.0, 1.0], [0.0, 1.0], ["a", "b"], n_perm=9).p_value == 1.0


def test_paired_difference_strong_effect() -> None:
    rng = np.random.default_rng(5)
    clusters = np.repeat(np.arange(30), 6)
    base = rng.random(clusters.size)
    program = base + 0.1 + rng.normal(0, 0.02, clusters.size)
    result = paired_difference(program, base, clusters)
    assert result.p_value < 0.01
    assert result.ci_low > 0.08 and result.ci_high < 0.12
    assert result.mean_diff == pytest.approx(0.1, abs=0.01)
    # reversing the programs flips the sign, keeps the p-value
    reverse = paired_difference(base, program, clusters)
    assert reverse.mean_diff == pytest.approx(-result.mean_diff)
    assert reverse.p_value == result.p_value


def test_paired_difference_null_is_not_significant() -> None:
    rng = np.random.default_rng(6)
    clusters = np.repeat(np.arange(40), 5)
    a = rng.random(clusters.size)
    b = rng.random(clusters.size)
    result = paired_difference(a, b, clusters)
    assert result.p_value > 0.05
    assert result.ci_low < 0 < result.ci_high


def test_paired_difference_drops_nan_pairs() -> None:
    # pairs 2 (b NaN) and 3 (a NaN) are dropped: differences (1 - 0, 1 - 1) -> mean .5
    result = paired_difference([1.0, 1.0, np.nan, 1.0], [0.0, np.nan, 0.0, 1.0], ["a", "b", "c", "d"])
    assert result.n_pairs == 2
    assert result.mean_diff == 0.5
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0], ["a", "b"])


# --- run tables -------------------------------------------------------------------------------------------

BASE = {
    "model": "selfalign/gemma-3-270m",
    "survey": "wvs7",
    "country": "DEU",
    "language": "en",
    "protocol": "binary",
    "topic": "Social Values",
}


def _row(**fields: object) -> dict[str, object]:
    row = {**BASE, "demo_language": "en", "k": 3, "seed": 0, "ok": True}
    row.update(fields)
    return row


def test_summarize_counts_failures_and_excludes_them() -> None:
    rows = [
        _row(program="zero-shot", question_id="Q1", agreement=1.0, js_similarity=0.9, wasserstein_similarity=0.8),
        _row(program="zero-shot", question_id="Q2", agreement=0.0, js_similarity=0.5, wasserstein_similarity=0.6),
        _row(program="zero-shot", question_id="Q3", agreement=1.0, js_similarity=0.7, wasserstein_similarity=np.nan),
        # a failed probe: its metric values (even a 0.0 left in the row) must not count as a wrong answer
        _row(
            program="zero-shot",
            question_id="Q4",
            ok=False,
            agreement=0.0,
            js_similarity=np.nan,
            wasserstein_similarity=np.nan,
        ),
        _row(program="self-align", question_id="Q1", agreement=1.0, js_similarity=0.8, wasserstein_similarity=0.9),
        _row(
            program="self-align",
            question_id="Q2",
            ok=False,
            agreement=np.nan,
            js_similarity=np.nan,
            wasserstein_similarity=np.nan,
        ),
    ]
    out = summarize(pd.DataFrame(rows), by=["program"]).set_index("program")
    zs = out.loc["zero-shot"]
    assert (zs.n_probes, zs.n_ok, zs.n_failed) == (4, 3, 1)
    # agreement in percent: (1 + 0 + 1) / 3 * 100 = 66.67 (the failed Q4 is left out, not scored 0)
    assert zs.agreement_mean == pytest.approx(200 / 3)
    assert 0 <= zs.agreement_ci_low <= zs.agreement_mean <= zs.agreement_ci_high <= 100
    # JS: (.9 + .5 + .7) / 3 = .7; Wasserstein over the two ordinal rows: (.8 + .6) / 2 = .7
    assert zs.js_similarity_mean == pytest.approx(0.7)
    assert zs.wasserstein_similarity_mean == pytest.approx(0.7)
    assert (zs.agreement_n, zs.wasserstein_similarity_n) == (3, 2)
    sa = out.loc["self-align"]
    assert (sa.n_probes, sa.n_failed, sa.agreement_mean) == (2, 1, 100.0)
    # no grouping: one row over everything; agreement (1 + 0 + 1 + 1) / 4 = 75%
    total = summarize(pd.DataFrame(rows), by=[])
    assert len(total) == 1
    assert (total.n_probes[0], total.n_failed[0], total.agreement_mean[0]) == (6, 2, 75.0)


def test_summarize_all_failed_group_and_unknown_column() -> None:
    rows = [
        _row(
            program="p",
            question_id=f"Q{i}",
            ok=False,
            agreement=np.nan,
            js_similarity=np.nan,
            wasserstein_similarity=np.nan,
        )
        for i in range(3)
    ]
    out = summarize(pd.DataFrame(rows), by=["program", "k"])
    assert list(out.columns[:5]) == ["program", "k", "n_probes", "n_ok", "n_failed"]
    assert (out.n_probes[0], out.n_failed[0]) == (3, 3)
    assert np.isnan(out.agreement_mean[0])
    with pytest.raises(UnknownChoiceError, match="unknown column 'contry'"):
        summarize(pd.DataFrame(rows), by=["contry"])


def _comparison_table() -> pd.DataFrame:
    # zero-shot: k = 0, one seed, no demonstrations; agreement Q1..Q4 = 1, 0, 0, 1
    rows = [
        _row(program="zero-shot", k=0, demo_language=None, question_id=q, agreement=v)
        for q, v in zip(["Q1", "Q2", "Q3", "Q4"], [1.0, 0.0, 0.0, 1.0], strict=True)
    ]
    # self-align at k = 3 and 5, seeds 0 and 1: right everywhere except Q4 at k = 5, seed 1
    for k in (3, 5):
        for seed in (0, 1):
            for q in ("Q1", "Q2", "Q3", "Q4"):
                value = 0.0 if (q, k, seed) == ("Q4", 5, 1) else 1.0
                rows.append(_row(program="self-align", k=k, seed=seed, question_id=q, agreement=value))
    # failed rows on both sides are never paired
    rows.append(_row(program="self-align", k=3, seed=2, question_id="Q1", ok=False, agreement=np.nan))
    rows.append(_row(program="zero-shot", k=0, demo_language=None, question_id="Q5", ok=False, agreement=0.0))
    rows.append(_row(program="self-align", k=3, seed=0, question_id="Q5", agreement=1.0))
    return pd.DataFrame(rows)


def test_compare_to_baseline_pairs_across_k_and_seeds() -> None:
    out = compare_to_baseline(_comparison_table(), "zero-shot")
    assert list(out.program) == ["self-align"]
    row = out.iloc[0]
    # 16 pairs (4 questions x 2 k x 2 seeds; Q5 has no ok baseline). Differences in points:
    # Q1: 0 x4; Q2: +100 x4; Q3: +100 x4; Q4: 0, 0, 0, -100 -> (800 - 100) / 16 = 43.75
    assert row.n_pairs == 16
    assert row.mean_diff == pytest.approx(43.75)
    assert row.mean_program == pytest.approx(1500 / 16)  # 15 of 16 right
    assert row.mean_baseline == pytest.approx(50.0)
    assert row.ci_low <= row.mean_diff <= row.ci_high
    # four clusters: the smallest reachable p is about 2/16, far from significance
    assert row.p_value > 0.1


def test_compare_to_baseline_by_k() -> None:
    out = compare_to_baseline(_comparison_table(), "zero-shot", by=["k"]).set_index("k")
    # k = 3: Q2, Q3 +100 for both seeds -> 400 / 8 = 50; k = 5: 400 - 100 over 8 = 37.5
    assert out.loc[3, "mean_diff"] == pytest.approx(50.0)
    assert out.loc[5, "mean_diff"] == pytest.approx(37.5)
    assert out.loc[3, "n_pairs"] == 8  # Q5 at k = 3 is ok but its baseline failed: unpaired
    assert out.loc[5, "n_pairs"] == 8


def test_compare_to_baseline_matches_seeds_and_averages_duplicates() -> None:
    rows = [
        # baseline run with seeds 0 and 1 and demonstrations in English, at two k: mean over k per key
        _row(program="base", k=1, seed=0, question_id="Q1", agreement=1.0),
        _row(program="base", k=2, seed=0, question_id="Q1", agreement=0.0),  # seed 0 reference: .5
        _row(program="base", k=1, seed=1, question_id="Q1", agreement=0.0),  # seed 1 reference: 0
        _row(program="new", k=4, seed=0, question_id="Q1", agreement=1.0),  # 1 - .5 = .5
        _row(program="new", k=4, seed=1, question_id="Q1", agreement=1.0),  # 1 - 0 = 1
        _row(program="new", k=4, seed=2, question_id="Q1", agreement=1.0),  # no seed-2 baseline: unpaired
        _row(program="new", k=4, seed=0, demo_language="de", question_id="Q1", agreement=1.0),  # unpaired
    ]
    row = compare_to_baseline(pd.DataFrame(rows), "base").iloc[0]
    # (50 + 100) / 2 = 75 points over the 2 paired rows
    assert row.n_pairs == 2
    assert row.mean_diff == pytest.approx(75.0)


def test_compare_to_baseline_similarity_metric_and_errors() -> None:
    table = _comparison_table()
    table["js_similarity"] = np.where(table.program == "zero-shot", 0.5, 0.75)
    row = compare_to_baseline(table, "zero-shot", metric="js_similarity").iloc[0]
    # similarities stay in [0, 1]: .75 - .5 = .25 on every pair, so the bootstrap CI is exact
    assert row.mean_diff == pytest.approx(0.25)
    assert row.ci_low == pytest.approx(0.25) and row.ci_high == pytest.approx(0.25)
    with pytest.raises(UnknownChoiceError, match="closest: zero-shot"):
        compare_to_baseline(table, "zero-shoot")
    with pytest.raises(UnknownChoiceError):
        compare_to_baseline(table, "zero-shot", by=["nope"])
