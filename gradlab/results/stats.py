"""The statistics of the results pages, each a small pure function of arrays.

Two units of replication appear. Where a contrast's batches hold different images in every seed
(training runs, seed-dependent orders), the seed is the unit: the contrast is computed once per
seed and its mean gets a Student-t interval and test over seeds (n - 1 degrees of freedom). Where
the batches are the same images in every seed (a metric's fixed order), the batch is the unit: a
batch's effect on D is shared by the seeds, so a t-test over seeds would measure training noise
only; ``batch_permutation_p`` permutes the batches between the contrast's groups, one permutation
for every seed. A set of tests is corrected with Holm's step-down method (Holm 1979), which
controls the family-wise error rate without assuming independence. Convention: a (Holm-adjusted)
p at or below ``ALPHA`` rejects, as in statsmodels. The seeds a test would need come from the
power of a two-sided one-sample (or paired) t-test under the noncentral t distribution. Holm is
written by hand (``gradlab.report.summary.holm``, tested against statsmodels) because scipy has
none and statsmodels is a heavy runtime dependency for a few lines.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from gradlab.report.summary import holm  # noqa: F401  (one Holm, shared with the report's summaries)
from gradlab.report.summary import t_interval

LEVEL = 0.95  # every interval on the results pages
ALPHA = 0.05  # family-wise error rate of every verdict; p <= ALPHA rejects
POWER = 0.8  # the power "seeds needed" is computed for
N_PERM = 20000  # permutations of a batch-level test: p resolves to ~1e-4, below 0.05 / 100


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of ``values`` (one per seed, non-finite ones left out) and its two-sided t-interval
    (``gradlab.report.summary.t_interval``); NaN bounds for one seed."""
    v = _finite(values)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m, lo, hi = t_interval(v, level)
    return float(m), float(lo), float(hi)


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[np.isfinite(v)]


def t_test_p(values: np.ndarray) -> float:
    """Two-sided p of a one-sample t-test of mean 0 (a paired test when ``values`` are differences);
    NaN for fewer than 2 finite values; without spread 0 (mean not 0) or 1 (mean 0)."""
    v = _finite(values)
    if len(v) < 2:
        return math.nan
    if v.std(ddof=1) == 0:
        return 0.0 if v.mean() != 0 else 1.0
    return float(stats.ttest_1samp(v, 0.0).pvalue)


def tost_p(values: np.ndarray, margin: float) -> float:
    """Two one-sided tests (Schuirmann 1987) of equivalence within ``±margin``: the larger of the
    one-sided t-test p-values of mean > -margin and mean < +margin. ``tost_p <= alpha`` exactly when
    the ``1 - 2 alpha`` t-interval lies inside ``±margin`` (TOST at 5% = the 90% interval)."""
    v = _finite(values)
    if len(v) < 2:
        return math.nan
    if v.std(ddof=1) == 0:
        return 0.0 if abs(v.mean()) < margin else 1.0
    lower = stats.ttest_1samp(v, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(v, margin, alternative="less").pvalue
    return float(max(lower, upper))


def beyond_p(values: np.ndarray, margin: float) -> float:
    """One-sided t-test p that the mean lies beyond the margin on its estimate's side (mean >
    +margin when the mean is positive, < -margin when negative): the test that contradicts an
    equivalence claim. ``beyond_p <= alpha`` exactly when the ``1 - 2 alpha`` interval lies wholly
    outside ``±margin``."""
    v = _finite(values)
    if len(v) < 2:
        return math.nan
    side = 1.0 if v.mean() >= 0 else -1.0
    if v.std(ddof=1) == 0:
        return 0.0 if abs(v.mean()) > margin else 1.0
    return float(stats.ttest_1samp(v, side * margin, alternative="greater" if side > 0 else "less").pvalue)


def batch_permutation_p(profiles: np.ndarray, in_a: np.ndarray, in_b: np.ndarray, n_perm: int = N_PERM,
                        seed: int = 0) -> float:
    """Two-sided p of the mean over seeds of (mean of ``profiles`` in group a - mean in group b),
    when the K batches are the same images in every seed. ``profiles`` ``[S, K]``; ``in_a``,
    ``in_b`` ``[K]`` or ``[S, K]`` boolean (each seed's groups by its own scores). Null: the batches'
    values are unrelated to the groups; one permutation of the K batches is applied to every seed,
    so a batch's effect shared by the seeds moves as one. The statistic's null mean is 0 (a
    difference of group means under permutation), so p = share of permutations (the observed one
    counted) whose |statistic| is at least the observed one. NaN for a seed without both groups."""
    prof = np.asarray(profiles, dtype=np.float64)
    s, k = prof.shape
    a = np.broadcast_to(np.asarray(in_a, dtype=bool), (s, k))
    b = np.broadcast_to(np.asarray(in_b, dtype=bool), (s, k))
    if not (a.any(axis=1).all() and b.any(axis=1).all()) or not np.isfinite(prof).all():
        return math.nan
    wa, wb = a / a.sum(axis=1, keepdims=True), b / b.sum(axis=1, keepdims=True)  # [S, K] group weights
    obs = float(np.mean(np.sum(prof * (wa - wb), axis=1)))
    perm = np.argsort(np.random.default_rng(seed).random((n_perm, k)), axis=1)
    stat = np.mean([prof[i][perm] @ (wa[i] - wb[i]) for i in range(s)], axis=0)
    return float((1 + np.sum(np.abs(stat) >= abs(obs) - 1e-12)) / (1 + n_perm))


def t_power(delta: float | np.ndarray, n: int | np.ndarray, alpha: float) -> np.ndarray:
    """Power of a two-sided one-sample t-test at ``alpha`` with ``n`` observations when the true
    mean is ``delta`` standard deviations: P(T > c) + P(T < -c) with T noncentral t (n - 1 degrees
    of freedom, noncentrality delta sqrt(n)). scipy's noncentral t cdf returns NaN where the lower
    tail is negligible (large noncentrality); that tail then counts as 0, not as NaN (which would
    make ``power >= 0.8`` false and skip the right n)."""
    n = np.asarray(n, dtype=np.float64)
    df = n - 1
    crit = stats.t.isf(alpha / 2, df)
    nc = np.abs(delta) * np.sqrt(n)
    upper = stats.nct.sf(crit, df, nc)
    lower = np.nan_to_num(stats.nct.cdf(-crit, df, nc), nan=0.0)
    return np.clip(upper + lower, 0.0, 1.0)


def n_for_power(delta: float, alpha: float = ALPHA, power: float = POWER, most: int = 1000) -> int:
    """The smallest n in 2..``most`` whose ``t_power`` reaches ``power``; ``most + 1`` when none does.
    Power grows with n and with |delta|, so this is monotone (non-increasing) in |delta|."""
    ns = np.arange(2, most + 1)
    ok = t_power(delta, ns, alpha) >= power
    return int(ns[np.argmax(ok)]) if ok.any() else most + 1


def seeds_needed(values: np.ndarray, effect: float | None = None, alpha: float = ALPHA,
                 power: float = POWER, most: int = 1000) -> int | None:
    """Seeds for a two-sided one-sample t-test at ``alpha`` to detect ``effect`` (default: the
    measured mean) with ``power``, given the measured spread of ``values`` (``n_for_power``; exact
    for normal data with that spread). None when there is no spread or no effect; ``most + 1``
    when even ``most`` seeds would not do."""
    v = _finite(values)
    d = float(v.mean()) if effect is None and len(v) else effect
    if len(v) < 2 or not d or v.std(ddof=1) == 0:
        return None
    return n_for_power(abs(d) / v.std(ddof=1), alpha, power, most)


def seeds_needed_range(values: np.ndarray, effect: float | None = None, alpha: float = ALPHA,
                       power: float = POWER, most: int = 1000, level: float = LEVEL
                       ) -> tuple[int, int, int] | None:
    """``seeds_needed`` and the range implied by the ``level`` interval of the standard deviation
    (chi-square, n - 1 degrees of freedom): (n, n at the interval's low sigma, n at its high
    sigma). From 3 seeds sigma is known to within a factor of ~6, so n is an order of magnitude."""
    v = _finite(values)
    n = seeds_needed(v, effect, alpha, power, most)
    if n is None:
        return None
    d = float(v.mean()) if effect is None else effect
    s, df = v.std(ddof=1), len(v) - 1
    lo_sigma = s * math.sqrt(df / stats.chi2.ppf(0.5 + level / 2, df))
    hi_sigma = s * math.sqrt(df / stats.chi2.ppf(0.5 - level / 2, df))
    return n, n_for_power(abs(d) / lo_sigma, alpha, power, most), n_for_power(abs(d) / hi_sigma, alpha, power, most)


def rejects(p: float, alpha: float = ALPHA) -> bool:
    """The pages' one convention: a finite p at or below ``alpha`` rejects."""
    return math.isfinite(p) and p <= alpha


def verdict(p_adj: float, mean: float, sign: int) -> str:
    """``supported`` / ``contradicted`` (adjusted p at or below ``ALPHA``, mean with / against the
    claimed ``sign``), else ``not resolvable``."""
    if not rejects(p_adj):
        return "not resolvable"
    return "supported" if mean * sign > 0 else "contradicted"
