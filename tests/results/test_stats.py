"""The results pages' statistics against naive references."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from gradlab.results import stats


def naive_holm(p):
    """Holm (1979) by its definition: the i-th smallest p times (m - i + 1), made monotone, capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    adj = [0.0] * m
    for rank, i in enumerate(order):
        adj[i] = min(1.0, max((m - r) * p[order[r]] for r in range(rank + 1)))
    return adj


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=12))
def test_holm_equals_its_definition(p):
    assert np.allclose(stats.holm(p), naive_holm(p))


def test_holm_skips_nan_and_does_not_count_it():
    assert np.allclose(stats.holm([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04], equal_nan=True)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_interval_is_scipys_t_interval(n):
    v = np.random.default_rng(n).normal(size=n)
    m, lo, hi = stats.interval(v)
    ref = sps.t.interval(0.95, n - 1, loc=v.mean(), scale=sps.sem(v))
    assert m == pytest.approx(v.mean()) and (lo, hi) == pytest.approx(ref)


def test_one_seed_has_no_interval_and_no_test():
    m, lo, hi = stats.interval(np.array([0.3]))
    assert m == 0.3 and math.isnan(lo) and math.isnan(hi) and math.isnan(stats.t_test_p(np.array([0.3])))


def test_t_test_p_is_scipys():
    v = np.array([0.1, 0.3, 0.25, 0.05])
    assert stats.t_test_p(v) == pytest.approx(sps.ttest_1samp(v, 0).pvalue)


def _simulated_power(n, delta, alpha, reps=20000):
    x = np.random.default_rng(0).normal(delta, 1.0, size=(reps, n))
    return np.mean(sps.ttest_1samp(x, 0.0, axis=1).pvalue < alpha)


@pytest.mark.parametrize("delta,alpha", [(1.0, 0.05), (0.5, 0.05), (2.0, 0.001)])
def test_seeds_needed_reach_the_power_by_simulation_and_one_fewer_does_not(delta, alpha):
    v = np.array([delta - 1.0, delta + 1.0]) / math.sqrt(2)  # mean delta / sqrt(2), sd 1 -> effect size below
    n = stats.seeds_needed(v, effect=delta, alpha=alpha)
    assert _simulated_power(n, delta, alpha) >= 0.78
    assert n == 2 or _simulated_power(n - 1, delta, alpha) < 0.82
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(0.8)
    assert n >= math.ceil((z / delta) ** 2)  # the normal approximation never asks for more


def test_seeds_needed_edge_cases():
    assert stats.seeds_needed(np.array([1.0, 1.0])) is None  # no spread: nothing to size
    assert stats.seeds_needed(np.array([-1.0, 1.0])) is None  # no effect
    assert stats.seeds_needed(np.array([0.0, 1e-3, -1e-3 + 1e-6]), most=50) == 51


@pytest.mark.parametrize("p_adj,mean,sign,want", [(0.01, -0.2, -1, "supported"), (0.01, 0.2, -1, "contradicted"),
                                                   (0.2, -0.2, -1, "not resolvable"), (np.nan, 1.0, 1, "not resolvable")])
def test_verdict(p_adj, mean, sign, want):
    assert stats.verdict(p_adj, mean, sign) == want


# ----------------------------------------------------------------- against statsmodels, edge cases (issue 31)

sm_multi = pytest.importorskip("statsmodels.stats.multitest")
sm_power = pytest.importorskip("statsmodels.stats.power")
sm_ws = pytest.importorskip("statsmodels.stats.weightstats")


@settings(max_examples=40, deadline=None)  # statsmodels' multipletests takes ~0.1 s a call here
@given(st.lists(st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.01, 0.05, 1.0])), min_size=1, max_size=40))
def test_holm_is_statsmodels_holm_with_ties_and_thresholds(p):
    adj = stats.holm(p)
    reject, ref, _, _ = sm_multi.multipletests(p, alpha=stats.ALPHA, method="holm")
    np.testing.assert_allclose(adj, ref, rtol=1e-12, atol=1e-15)
    assert [stats.rejects(a) for a in adj] == list(reject)  # the same convention: p <= alpha rejects


def test_holm_of_one_test_is_the_test_and_a_p_at_alpha_rejects():
    assert stats.holm([0.05])[0] == 0.05 and stats.rejects(0.05) and not stats.rejects(0.0500001)
    assert stats.verdict(0.05, 1.0, 1) == "supported" and stats.verdict(np.nan, 1.0, 1) == "not resolvable"
    assert np.isnan(stats.holm([np.nan])[0])


@pytest.mark.parametrize("v", [[1.0, 2.0], [0.3, 0.3, 0.3], [0.1, np.nan, 0.4, 0.2], [-1.0, 1.0, 1.0]])
def test_interval_and_t_test_on_small_tied_and_nan_inputs(v):
    x = np.array(v)
    f = x[np.isfinite(x)]
    m, lo, hi = stats.interval(x)
    assert m == pytest.approx(f.mean())
    if f.std(ddof=1) == 0:
        assert lo == hi == m and stats.t_test_p(x) == (0.0 if f.mean() else 1.0)
    else:
        assert (lo, hi) == pytest.approx(sps.t.interval(0.95, len(f) - 1, loc=f.mean(), scale=sps.sem(f)))
        assert stats.t_test_p(x) == pytest.approx(sps.ttest_1samp(f, 0).pvalue)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 12), st.floats(-2, 2), st.floats(0.01, 1.5), st.integers(0, 10**6))
def test_tost_and_beyond_are_statsmodels(n, mean, margin, seed):
    x = np.random.default_rng(seed).normal(mean, 1.0, n)
    d = sm_ws.DescrStatsW(x)
    assert stats.tost_p(x, margin) == pytest.approx(d.ttost_mean(-margin, margin)[0], rel=1e-9)
    side = "larger" if x.mean() >= 0 else "smaller"
    want = d.ttest_mean(margin if side == "larger" else -margin, alternative=side)[1]
    assert stats.beyond_p(x, margin) == pytest.approx(want, rel=1e-9)


def test_tost_at_5_percent_is_the_90_percent_interval_inside_the_margin():
    rng = np.random.default_rng(3)
    for _ in range(200):
        x = rng.normal(rng.uniform(-0.02, 0.02), 0.01, 5)
        _, lo, hi = stats.interval(x, 0.90)
        assert stats.rejects(stats.tost_p(x, 0.01)) == (-0.01 < lo and hi < 0.01)
        assert stats.rejects(stats.beyond_p(x, 0.01)) == (lo > 0.01 or hi < -0.01)


def _quad_power(delta, n, alpha):
    """Power of the two-sided one-sample t-test by quadrature over the chi-square of the variance:
    T = (Z + delta sqrt(n)) / sqrt(V / df), so P(|T| > c | V) = Phi(nc - c s) + Phi(-nc - c s), s = sqrt(V/df)."""
    from scipy import integrate

    df = n - 1
    c, nc = sps.t.isf(alpha / 2, df), delta * math.sqrt(n)
    f = lambda v: (sps.norm.cdf(nc - c * math.sqrt(v / df)) + sps.norm.cdf(-nc - c * math.sqrt(v / df))) \
        * sps.chi2.pdf(v, df)  # noqa: E731
    lo, hi = sps.chi2.ppf(1e-14, df), sps.chi2.isf(1e-14, df)
    return integrate.quad(f, lo, hi, limit=200, points=[df])[0]


def test_power_has_no_nan_where_scipy_lower_tail_is_nan():
    """Issue 31: d = 2.585, n = 8, alpha = 0.05 / 36: scipy's nct.cdf is NaN, the power is 0.919."""
    assert math.isnan(sps.nct.cdf(-sps.t.isf(0.05 / 72, 7), 7, 2.585 * math.sqrt(8)))
    assert float(stats.t_power(2.585, 8, 0.05 / 36)) == pytest.approx(_quad_power(2.585, 8, 0.05 / 36), abs=1e-6)
    assert stats.n_for_power(2.585, 0.05 / 36) <= 8
    assert stats.n_for_power(3.8, 0.05 / 3) >= stats.n_for_power(5.6, 0.05 / 3)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.08, 20), st.sampled_from([0.05, 0.05 / 3, 0.05 / 10, 0.05 / 36, 0.05 / 100]))
def test_seeds_needed_is_the_smallest_n_with_the_reference_power(delta, alpha):
    n = stats.n_for_power(delta, alpha)
    if n <= 1000:
        assert _quad_power(delta, n, alpha) >= stats.POWER - 1e-6
    if 2 < n <= 1001:
        assert _quad_power(delta, n - 1, alpha) < stats.POWER + 1e-6
    ns = np.arange(2, 1001)
    ref = sm_power.ttest_power(delta, ns, alpha)  # statsmodels: NaN where scipy's tail is, else the same
    ok = np.isfinite(ref)
    np.testing.assert_allclose(stats.t_power(delta, ns, alpha)[ok], ref[ok], atol=1e-9)


@pytest.mark.parametrize("alpha", [0.05, 0.05 / 3, 0.05 / 36, 0.05 / 100])
def test_seeds_needed_is_monotone_in_the_effect(alpha):
    ns = [stats.n_for_power(d, alpha) for d in np.linspace(0.05, 20, 120)]
    assert all(a >= b for a, b in zip(ns, ns[1:]))


def test_seeds_needed_range_brackets_the_estimate():
    v = np.array([0.1, 0.3, 0.25])
    n, lo, hi = stats.seeds_needed_range(v)
    assert lo <= n <= hi and n == stats.seeds_needed(v)
    assert stats.seeds_needed_range(np.array([1.0, 1.0])) is None


def test_batch_permutation_p_is_the_exact_permutation_p():
    """K = 7 batches shared by 3 seeds: every one of the 7! permutations, against the Monte Carlo p."""
    import itertools

    rng = np.random.default_rng(0)
    prof = rng.normal(size=7) + 0.3 * rng.normal(size=(3, 7))
    a, b = np.arange(7) < 2, np.arange(7) >= 2
    stat = lambda p: np.mean(p[:, a].mean(axis=1) - p[:, b].mean(axis=1))  # noqa: E731
    obs = abs(stat(prof))
    exact = np.mean([abs(stat(prof[:, list(q)])) >= obs - 1e-12 for q in itertools.permutations(range(7))])
    assert stats.batch_permutation_p(prof, a, b, n_perm=20000) == pytest.approx(exact, abs=0.01)
    assert math.isnan(stats.batch_permutation_p(prof, a, np.zeros(7, bool)))


def test_the_claims_batch_test_holds_its_level_under_a_shared_batch_null():
    """Issue 31: 16 batches whose effects (unrelated to the groups) are shared by 3 seeds: the
    batch permutation rejects at ~5%; the t-test over seeds, which sees only seed noise, far more."""
    rng = np.random.default_rng(7)
    a, b = np.arange(16) >= 12, np.arange(16) < 12  # Q4 vs Q1..Q3
    n, perm_rej, t_rej = 1000, 0, 0
    for i in range(n):
        prof = rng.normal(size=16) + 0.3 * rng.normal(size=(3, 16))
        perm_rej += stats.rejects(stats.batch_permutation_p(prof, a, b, n_perm=200, seed=i))
        t_rej += stats.rejects(stats.t_test_p(prof[:, a].mean(axis=1) - prof[:, b].mean(axis=1)))
    assert 0.03 <= perm_rej / n <= 0.07
    assert t_rej / n > 0.3
