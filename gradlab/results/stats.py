"""The statistics of the results pages, each a small pure function of arrays over seeds.

Seeds are the unit of replication: a contrast is computed once per seed (one trained network, one
data order), and its mean gets a Student-t interval over seeds (n - 1 degrees of freedom). A set of
tests is corrected with Holm's step-down method (Holm 1979), which controls the family-wise error
rate without assuming independence. The seeds a test would need come from the measured spread and
the power of a two-sided one-sample (or paired) t-test under the noncentral t distribution.
Holm is written by hand because scipy has no Holm helper, and
statsmodels (which has one) is a heavy dependency for a few lines (``gradlab.report.summary.holm``).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from gradlab.report.summary import holm  # noqa: F401  (one Holm, shared with the report's summaries)
from gradlab.report.summary import t_interval

LEVEL = 0.95  # every interval on the results pages
ALPHA = 0.05  # family-wise error rate of every verdict
POWER = 0.8  # the power "seeds needed" is computed for


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of ``values`` (one per seed, non-finite ones left out) and its two-sided t-interval
    (``gradlab.report.summary.t_interval``); NaN bounds for one seed."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m, lo, hi = t_interval(v, level)
    return float(m), float(lo), float(hi)


def t_test_p(values: np.ndarray) -> float:
    """Two-sided p of a one-sample t-test of mean 0 (a paired test when ``values`` are differences)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return math.nan
    if v.std(ddof=1) == 0:
        return 0.0 if v.mean() != 0 else 1.0
    return float(stats.ttest_1samp(v, 0.0).pvalue)


def seeds_needed(values: np.ndarray, effect: float | None = None, alpha: float = ALPHA,
                 power: float = POWER, most: int = 1000) -> int | None:
    """Seeds for a two-sided one-sample t-test at ``alpha`` to detect ``effect`` (default: the
    measured mean) with ``power``, given the measured spread of ``values``: the smallest n whose
    noncentral-t power reaches ``power`` (exact for normal data with that spread; the normal
    approximation undercounts at a handful of seeds). None when there is no spread or no effect;
    ``most + 1`` when even ``most`` seeds would not do."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    d = float(v.mean()) if effect is None else effect
    if len(v) < 2 or d == 0 or v.std(ddof=1) == 0:
        return None
    delta = abs(d) / v.std(ddof=1)
    for n in range(2, most + 1):
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nc = delta * math.sqrt(n)
        if stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) >= power:
            return n
    return most + 1


def verdict(p_adj: float, mean: float, sign: int) -> str:
    """``supported`` / ``contradicted`` (adjusted p below ``ALPHA``, mean with / against the claimed
    ``sign``), else ``not resolvable``."""
    if not math.isfinite(p_adj) or p_adj >= ALPHA:
        return "not resolvable"
    return "supported" if mean * sign > 0 else "contradicted"
