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
