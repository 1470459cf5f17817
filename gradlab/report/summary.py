"""The paper's question per training phase: which quantile of batches is closest to the full gradient?

For one probe (a batch order sorted by a metric) and one phase:

1. relative distance ``r[e, k] = D[e, k] / u_e`` for each epoch ``e`` of the phase, where the
   unit ``u_e`` is the random control's mean D at the same epoch (``control=``: or the
   ``random@class`` control's, class-stratified random batches; ``gradlab.report.units``:
   every probe in one common unit, < 1 = closer than a typical random batch; every epoch
   weighs the same even though D shrinks as training converges); then the phase profile
   ``r̄[k]`` = mean of ``r[e, k]`` over the phase's epochs. The within-order view divides by
   the probe's own epoch mean instead (``own_*`` columns; the unit of runs without the control);
2. the batches are split by their metric score into ``bins`` equal quantile bins (quartiles
   by default: Q1 = lowest 25 % of scores, Q4 = highest; deciles with ``bins=10``), and the
   mean of ``r̄`` within each bin is the bin's relative D;
3. the best bin is the one with the smallest relative D. Chance level comes from two places:
   a permutation test on the probe's own batches (shuffle which batch sits in which bin,
   ``n_perm`` times; ``p`` = share of shuffles whose best bin is at least as close), and the
   ``random`` probe of the same run, binned the same way (by batch number), whose best bin
   and bin spread show what a metric without signal looks like.

Everything here is a pure function of stored data (a ``Run``).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from gradlab.config import flatten
from gradlab.report.units import CONTROL, in_own_units, in_random_units
from gradlab.runfile.reader import Run


def bin_label(b: int, bins: int) -> str:
    """``Q1``..``Q4`` for quartiles, ``D1``..``D10`` for deciles, ``B1``.. otherwise (1 = lowest scores)."""
    prefix = {4: "Q", 10: "D", 5: "P"}.get(bins, "B")
    return f"{prefix}{b + 1}"


def bin_description(b: int, bins: int) -> str:
    lo, hi = round(100 * b / bins), round(100 * (b + 1) / bins)
    if b == 0:
        return f"lowest {hi}%"
    if b == bins - 1:
        return f"highest {100 - lo}%"
    return f"{lo}–{hi}th percentile"


def score_bins(scores: np.ndarray, bins: int) -> np.ndarray:
    """Quantile bin (0 = lowest scores) of each batch; bins differ in size by at most one batch."""
    k = len(scores)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(scores, kind="stable")] = np.arange(k)
    return (rank * bins) // k


def phase_profile(run: Run, probe: str, phase: int, measure: str = "l2", matrix: np.ndarray | None = None,
                  unit: str = CONTROL, skip_init: bool = False) -> np.ndarray:
    """``r̄[k]``: per-epoch D in ``unit``, averaged over the phase's epochs.

    ``unit = "random"``: D divided by the random control's mean D at the same epoch (the
    common unit: < 1 is closer than a typical random batch); another control's name
    (``"random@class"``): by that control's; ``"own"``: divided by this probe's own mean over
    batches of that epoch (the within-order view). ``matrix``: the probe's
    ``distance_matrix`` when the caller has read it already. ``skip_init``: leave out epoch 0,
    whose theta_0 is the untrained initialisation (D is taken at each epoch's start)."""
    epochs = run.phase_epochs(phase)
    if skip_init:
        epochs = epochs[epochs > 0]
    d = run.distance_matrix(probe, measure) if matrix is None else matrix
    if len(epochs) == 0:
        return np.full(d.shape[1], np.nan)
    rel = in_own_units(d) if unit == "own" else in_random_units(run, probe, measure, control=unit, matrix=d)
    return rel[epochs].mean(axis=0)


def bin_means(values: np.ndarray, bin_of: np.ndarray, bins: int) -> np.ndarray:
    """Mean of ``values`` per bin; ``values`` may be [k] or [n, k] (one row per permutation)."""
    sums = values @ np.eye(bins)[bin_of]  # one-hot [k, bins]
    counts = np.bincount(bin_of, minlength=bins).astype(np.float64)
    return sums / np.where(counts > 0, counts, np.nan)


def _bin_stats(prof: np.ndarray, scores: np.ndarray, bins: int, n_perm: int, rng: np.random.Generator
               ) -> dict[str, object]:
    """Bin means of a phase profile, its best bin, and the permutation test of that best bin:
    shuffling which batch sits in which score bin keeps the profile's values (and its unit)
    and destroys only their relation to the score."""
    b = score_bins(scores, bins)
    means = bin_means(prof, b, bins)
    best = int(np.nanargmin(means))
    outer = np.isin(b, [0, bins - 1])
    perms = np.stack([rng.permutation(prof) for _ in range(n_perm)]) if n_perm else np.zeros((0, len(prof)))
    perm_best = np.nanmin(bin_means(perms, b, bins), axis=1) if n_perm else np.array([np.nan])
    lo, hi = scores[b == best].min(), scores[b == best].max()
    return {
        "bin_means": means, "best_bin": best, "best_rel": float(means[best]),
        "worst_bin": int(np.nanargmax(means)), "spread": float(np.nanmax(means) - np.nanmin(means)),
        "outer_rel": float(prof[outer].mean()) if outer.any() else np.nan,
        "middle_rel": float(prof[~outer].mean()) if (~outer).any() else np.nan,
        "chance_best_rel": float(np.mean(perm_best)),
        "p_value": float((1 + np.sum(perm_best <= means[best] + 1e-12)) / (1 + n_perm)) if n_perm else np.nan,
        "best_scores": (float(lo), float(hi)),
    }


def holm(p) -> np.ndarray:
    """Holm-adjusted p-values (Holm 1979, step-down; controls the family-wise error rate without
    assuming independence). NaN stays NaN and does not count as a test. Written here because scipy
    has no Holm helper, and statsmodels, which has one, is a heavy dependency for a few lines."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (len(ok) - i) * p[j]))
        out[j] = running
    return out


def _corrected(df: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Holm across the table's probe x phase tests: ``p_holm``, ``n_tests``, and the verdict from ``p_holm``."""
    if df.empty:
        return df
    df["p_holm"] = holm(df["p_value"].to_numpy(dtype=np.float64))
    df["n_tests"] = int(np.isfinite(df["p_value"].to_numpy(dtype=np.float64)).sum())
    df["verdict"] = [_verdict(p, alpha) for p in df["p_holm"]]
    return df


def holm_across(summaries: dict[str, pd.DataFrame], alpha: float = 0.05) -> dict[str, pd.DataFrame]:
    """The summaries of one table (one per run) Holm-corrected together: a table that shows several
    runs' rows corrects across all of them, so its ``n_tests`` is the table's number of tests."""
    keys = [k for k, df in summaries.items() if len(df)]
    if not keys:
        return dict(summaries)
    df = _corrected(pd.concat([summaries[k].assign(table_run=k) for k in keys], ignore_index=True), alpha)
    out = dict(summaries)
    out.update({k: df[df["table_run"] == k].drop(columns="table_run").reset_index(drop=True) for k in keys})
    return out


def _verdict(p: float, alpha: float) -> str:
    if np.isnan(p):
        return "no test"
    return "beats chance" if p <= alpha else "within chance"  # at or below alpha rejects (as statsmodels)


def _summary_row(run: Run, probe: str, phase: int, epochs: np.ndarray, st: dict, own: dict, ctrl: dict | None,
                 bins: int, unit: str, alpha: float, n_batches: int) -> dict[str, object]:
    best = int(st["best_bin"])
    row: dict[str, object] = {
        "probe": probe, "score_label": run.score_label(probe), "phase": phase, "unit": unit,
        "epochs": f"{epochs[0]}–{epochs[-1]}", "n_epochs": len(epochs), "lr": run.phase_lr(phase),
        "n_batches": n_batches,
    }
    row.update({f"bin_{i + 1}": float(v) for i, v in enumerate(st["bin_means"])})
    row.update({
        "best_bin": best + 1, "best_label": f"{bin_label(best, bins)} ({bin_description(best, bins)})",
        "best_scores": st["best_scores"], "best_rel": st["best_rel"], "gain": 1.0 - st["best_rel"],
        "worst_bin": int(st["worst_bin"]) + 1, "spread": st["spread"],
        "outer_rel": st["outer_rel"], "middle_rel": st["middle_rel"],
        "chance_best_rel": st["chance_best_rel"], "p_value": st["p_value"],
        "control_best_rel": ctrl["best_rel"] if ctrl else np.nan,
        "control_spread": ctrl["spread"] if ctrl else np.nan,
        "verdict": _verdict(st["p_value"], alpha),
        "own_best_rel": own["best_rel"],
    })
    row.update({f"own_bin_{i + 1}": float(v) for i, v in enumerate(own["bin_means"])})
    if ctrl:
        row.update({f"control_bin_{i + 1}": float(v) for i, v in enumerate(ctrl["bin_means"])})
    return row


def phase_summary(run: Run | Sequence[Run], measure: str = "l2", bins: int = 4, control: str = CONTROL,
                  n_perm: int = 2000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """One row per (metric probe, phase) answering "which quantile of batches is closest to ∇_e?".

    Given a list of runs (seeds of one study) it returns the seed-group summary instead
    (``seed_summary``: means across seeds with 95% intervals and a pooled permutation test).

    Unit (column ``unit``): the random control's mean D at the same epoch ("random"; < 1 =
    closer than a typical random batch), or, for a run without the control, each probe's own
    epoch mean ("own", with a warning). ``control="random@class"``: the class-stratified random
    control's instead (unit "random@class"; its ``control_*`` columns are that control's), so
    that a run with both controls gives every probe in both units, one call each.

    Columns: probe, phase, epochs, lr (stored /train/lr), ``bin_1..bin_<bins>`` (mean D per
    quantile bin in the unit), best_bin (1-based), best_label, best_scores, best_rel, gain
    (1 − best_rel), outer_rel / middle_rel (the paper's "extremes"), chance_best_rel and
    p_value (permutation test: batches shuffled between bins), p_holm (Holm-corrected across
    the table's probe x phase tests, ``n_tests`` of them), control_best_rel /
    control_spread / ``control_bin_*`` (the control probe binned the same way by batch
    number), verdict (from p_holm), and the within-order view ``own_bin_*`` / ``own_best_rel``.
    """
    if isinstance(run, (list, tuple)):
        if len(run) > 1:
            return seed_summary(run, measure, bins, control, n_perm, alpha, seed)
        run = run[0]
    if bins < 2:
        raise ValueError("bins must be at least 2")
    probes = [p for p in run.probes if measure in run.measures(p)]
    metric_probes = [p for p in probes if p != control] or [p for p in probes if p == control]
    unit = control if control in probes else "own"
    if unit == "own" and probes:
        warnings.warn(f"{run.path} has no {control!r} probe: the phase summary falls back to each probe's own "
                      f"epoch mean as the unit, so probes cannot be compared with each other", stacklevel=2)
    rng = np.random.default_rng(seed)
    read = {p: run.distance_matrix(p, measure) for p in probes}  # once per probe
    rows = []
    for phase in range(run.num_phases):
        epochs = run.phase_epochs(phase)
        if len(epochs) == 0:
            continue
        ctrl = (_bin_stats(phase_profile(run, control, phase, measure, read[control], unit),
                           run.batch_scores(control, epochs), bins, 0, rng) if unit != "own" else None)
        for probe in metric_probes:
            # a per-epoch order's batch k is its k-th batch by score at every epoch: binned by the phase's mean
            scores, d = run.batch_scores(probe, epochs), read[probe]
            st = _bin_stats(phase_profile(run, probe, phase, measure, d, unit), scores, bins, n_perm, rng)
            own = _bin_stats(phase_profile(run, probe, phase, measure, d, "own"), scores, bins, 0, rng)
            rows.append(_summary_row(run, probe, phase, epochs, st, own, ctrl, bins, unit, alpha, len(scores)))
    return _corrected(pd.DataFrame(rows), alpha)


def pooled_noise_scale(noise: pd.DataFrame) -> pd.DataFrame:
    """Per (probe, phase) of ``Run.noise_scale()``: the pooled simple noise scale
    ``mean(trace) / mean(g2)`` over the phase's epochs (McCandlish et al. 2018 average the two
    unbiased components before dividing), next to the count of epochs whose own ratio is
    undefined (``g2 <= 0``) and the median of the defined per-epoch ratios. ``pooled`` is NaN
    where ``mean(g2) <= 0`` or the components were not stored (files before they were)."""
    rows = []
    for (probe, phase), g in noise.groupby(["probe", "phase"], sort=True):
        g2, tr = float(g.g2.mean()), float(g.trace.mean())
        defined = g.noise_scale.dropna()
        rows.append({"probe": probe, "phase": int(phase), "epochs": len(g), "undefined": int(len(g) - len(defined)),
                     "median_epoch": float(defined.median()) if len(defined) else np.nan,
                     "pooled": tr / g2 if g2 > 0 else np.nan})
    return pd.DataFrame(rows, columns=["probe", "phase", "epochs", "undefined", "median_epoch", "pooled"])


# --------------------------------------------------------------------------- several seeds

def seed_groups(runs: Sequence[Run]) -> list[list[int]]:
    """Indices of runs that are seeds of one study (configs equal but for the seed and the
    output path), for groups of two or more."""
    def key(r: Run) -> str:
        flat = {k: v for k, v in flatten(r.config).items() if k not in ("train.seed", "train.seeds", "output.path")}
        return repr(sorted(flat.items()))
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(key(r), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _seed_profiles(runs: Sequence[Run], probe: str, phase: int, measure: str, unit: str) -> np.ndarray:
    """``[S, K]``: each seed's phase profile of ``probe`` in ``unit``."""
    return np.stack([phase_profile(r, probe, phase, measure, unit=unit) for r in runs])


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 and its two-sided Student-t interval (``n - 1`` degrees of freedom):
    with a handful of seeds the t quantile (4.30 for 3 seeds) is the honest width."""
    from scipy import stats

    n = values.shape[0]
    mean = values.mean(axis=0)
    if n < 2:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(axis=0, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def shared_composition(runs: Sequence[Run], probe: str) -> bool:
    """Whether ``probe``'s batches hold the same images in every run: a fixed order (not rebuilt at
    each theta_e) whose stored index is identical across the runs. Then a batch's effect on D is
    shared by the seeds (the same images at similar weights), and the seeds are not independent
    replicates of the batches."""
    if any(r.is_per_epoch(probe) for r in runs):
        return False
    first = runs[0].order_index(probe)
    return all(np.array_equal(first, r.order_index(probe)) for r in runs[1:])


POOLED_SHARED = "shared permutation"  # one permutation of the batches, applied to every seed
POOLED_SEEDS = "t over seeds"  # one statistic per seed against its own chance, t-test over seeds


def pooled_permutation_p(profiles: np.ndarray, bin_of: np.ndarray, bins: int, n_perm: int,
                         rng: np.random.Generator) -> tuple[float, float]:
    """The best bin of the seed-mean profile against chance, for seeds that share their batches.

    ``profiles`` ``[S, K]``, ``bin_of`` ``[K]`` or ``[S, K]`` (each run's own score bins).
    Statistic: min over bins of (mean over seeds of each seed's bin mean). Null: which batch sits
    in which score bin is random, and the same batch sits in the same place in every seed: one
    permutation of the K batches is applied to all seeds, so a batch's effect shared by the seeds
    moves as one (independent shuffles per seed would break that correlation and make the null too
    narrow). ``p`` = share of permutations whose statistic is at least as small (the observed one
    counted). Returns (observed statistic, p)."""
    s, k = profiles.shape
    bin_of = np.broadcast_to(bin_of, (s, k))
    obs = float(np.nanmin(np.mean([bin_means(profiles[i], bin_of[i], bins) for i in range(s)], axis=0)))
    if n_perm == 0:
        return obs, np.nan
    perm = np.argsort(rng.random((n_perm, k)), axis=1)  # n_perm permutations of the batches
    stat = np.nanmin(np.mean([bin_means(profiles[i][perm], bin_of[i], bins) for i in range(s)], axis=0), axis=1)
    return obs, float((1 + np.sum(stat <= obs + 1e-12)) / (1 + n_perm))


def seed_level_p(profiles: np.ndarray, bin_of: np.ndarray, bins: int, n_perm: int,
                 rng: np.random.Generator) -> float:
    """The best bin against chance for seeds whose batches differ (orders rebuilt at each theta_e,
    or seed-dependent orders): per seed, its best bin's D minus the mean best bin of ``n_perm``
    shufflings of its own batches (0 in expectation when batches are exchangeable within the
    seed), then a one-sided t-test over seeds that this is below 0. NaN for fewer than 2 seeds."""
    s, k = profiles.shape
    bin_of = np.broadcast_to(bin_of, (s, k))
    if n_perm == 0 or s < 2:
        return np.nan
    gaps = []
    for i in range(s):
        perm = np.argsort(rng.random((n_perm, k)), axis=1)
        chance = np.nanmin(bin_means(profiles[i][perm], bin_of[i], bins), axis=1).mean()
        gaps.append(np.nanmin(bin_means(profiles[i], bin_of[i], bins)) - chance)
    return one_sided_t_p(np.array(gaps))


def one_sided_t_p(values: np.ndarray) -> float:
    """p of a one-sided one-sample t-test that the mean of ``values`` is below 0 (n - 1 degrees of
    freedom); NaN for fewer than 2 finite values; without spread 0 or 1 by the sign of the mean."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return np.nan
    if v.std(ddof=1) == 0:
        return 0.0 if v.mean() < 0 else 1.0
    return float(stats.ttest_1samp(v, 0.0, alternative="less").pvalue)


def seed_summary(runs: Sequence[Run], measure: str = "l2", bins: int = 4, control: str = CONTROL,
                 n_perm: int = 2000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Per (probe, phase) over several seeds of one study: each score bin's mean D across seeds
    (in the random control's unit) with a 95% t-interval (``bin_k``, ``bin_k_ci_low/high``),
    the best bin of the seed mean with its interval (``best_rel``, ``ci_low``, ``ci_high``),
    the random control's value and interval in the same bin (``control_rel``,
    ``control_ci_low/high``), ``n_seeds``, and the pooled p-value with the test that gave it
    (``pooled_test``): ``pooled_permutation_p`` (one shared permutation) when the probe's batches
    hold the same images in every seed (``shared_composition``), else ``seed_level_p``. Each run's
    batches are binned by its own scores. ``control``: the unit, as in ``phase_summary``."""
    first = runs[0]
    probes = [p for p in first.probes if all(p in r.probes and measure in r.measures(p) for r in runs)]
    unit = control if control in probes else "own"
    metric_probes = [p for p in probes if p != control] or probes
    rng = np.random.default_rng(seed)
    rows = []
    for phase in range(min(r.num_phases for r in runs)):
        ctrl = None  # the control's per-bin seed mean and interval, one per phase
        if unit != "own":
            prof = _seed_profiles(runs, control, phase, measure, unit)
            ctrl = t_interval(np.stack([bin_means(prof[i], score_bins(r.batch_scores(control), bins), bins)
                                        for i, r in enumerate(runs)]))
        for probe in metric_probes:
            rows.append(_seed_row(runs, probe, phase, measure, unit, bins, n_perm, rng, alpha, ctrl))
    return _corrected(pd.DataFrame(rows), alpha)


def _seed_row(runs: Sequence[Run], probe: str, phase: int, measure: str, unit: str, bins: int, n_perm: int,
              rng: np.random.Generator, alpha: float, ctrl: tuple | None) -> dict[str, object]:
    b = np.stack([score_bins(r.batch_scores(probe, r.phase_epochs(phase)), bins) for r in runs])
    prof = _seed_profiles(runs, probe, phase, measure, unit)
    mean, lo, hi = t_interval(np.stack([bin_means(prof[i], b[i], bins) for i in range(len(runs))]))
    best = int(np.nanargmin(mean))
    shared = shared_composition(runs, probe)
    p = (pooled_permutation_p(prof, b, bins, n_perm, rng)[1] if shared
         else seed_level_p(prof, b, bins, n_perm, rng))
    row = {"probe": probe, "phase": phase, "unit": unit, "n_seeds": len(runs), "lr": runs[0].phase_lr(phase),
           "best_bin": best + 1, "best_label": f"{bin_label(best, bins)} ({bin_description(best, bins)})",
           "best_rel": float(mean[best]), "ci_low": float(lo[best]), "ci_high": float(hi[best]),
           "p_value": p, "pooled_test": POOLED_SHARED if shared else POOLED_SEEDS, "verdict": _verdict(p, alpha)}
    for i in range(bins):
        row.update({f"bin_{i + 1}": float(mean[i]), f"bin_{i + 1}_ci_low": float(lo[i]),
                    f"bin_{i + 1}_ci_high": float(hi[i])})
    if ctrl is not None:
        cm, clo, chi = ctrl
        row.update({"control_rel": float(cm[best]), "control_ci_low": float(clo[best]),
                    "control_ci_high": float(chi[best])})
    return row
