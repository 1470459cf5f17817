"""The paper's question per training phase: which quantile of batches is closest to the full gradient?

For one probe (a batch order sorted by a metric) and one phase:

1. relative distance ``r[e, k] = D[e, k] / mean_k D[e, k]`` for each epoch ``e`` of the phase,
   so every epoch weighs the same even though D shrinks as training converges; then the
   phase profile ``r̄[k]`` = mean of ``r[e, k]`` over the phase's epochs (1.0 = average batch);
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

import numpy as np
import pandas as pd

from gradlab.runfile.reader import Run

CONTROL = "random"


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


def phase_profile(run: Run, probe: str, phase: int, measure: str = "l2", matrix: np.ndarray | None = None
                  ) -> np.ndarray:
    """``r̄[k]``: per-epoch relative D (D / batch mean of that epoch), averaged over the phase.
    ``matrix``: the probe's ``distance_matrix`` when the caller has read it already."""
    epochs = run.phase_epochs(phase)
    d = (run.distance_matrix(probe, measure) if matrix is None else matrix)[epochs].astype(np.float64)
    if d.size == 0:
        return np.full(len(run.batch_scores(probe)), np.nan)
    mean = d.mean(axis=1, keepdims=True)
    return (d / np.where(mean > 0, mean, np.nan)).mean(axis=0)


def _bin_means(values: np.ndarray, bin_of: np.ndarray, bins: int) -> np.ndarray:
    """Mean of ``values`` per bin; ``values`` may be [k] or [n, k] (one row per permutation)."""
    sums = values @ np.eye(bins)[bin_of]  # one-hot [k, bins]
    counts = np.bincount(bin_of, minlength=bins).astype(np.float64)
    return sums / np.where(counts > 0, counts, np.nan)


def _bin_stats(run: Run, probe: str, phase: int, measure: str, bins: int, n_perm: int,
               rng: np.random.Generator, scores: np.ndarray, matrix: np.ndarray) -> dict[str, object]:
    prof = phase_profile(run, probe, phase, measure, matrix)
    b = score_bins(scores, bins)
    means = _bin_means(prof, b, bins)
    best = int(np.nanargmin(means))
    outer = np.isin(b, [0, bins - 1])
    perms = np.stack([rng.permutation(prof) for _ in range(n_perm)]) if n_perm else np.zeros((0, len(prof)))
    perm_best = np.nanmin(_bin_means(perms, b, bins), axis=1) if n_perm else np.array([np.nan])
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


def phase_summary(run: Run, measure: str = "l2", bins: int = 4, control: str = CONTROL, n_perm: int = 2000,
                  alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """One row per (metric probe, phase) answering "which quantile of batches is closest to ∇_e?".

    Columns: probe, phase, epochs, lr, ``bin_1..bin_<bins>`` (mean relative D per quantile
    bin, 1.0 = phase mean), best_bin (1-based), best_label (``Q4 (highest 25%)``),
    best_scores (score range of the best bin), best_rel, gain (1 − best_rel), outer_rel /
    middle_rel (extreme bins vs the rest, the paper's "extremes" reading), chance_best_rel
    (expected best-bin relative D when bins are random), p_value, control_best_rel and
    control_spread (the ``random`` probe binned the same way), verdict, and
    ``control_bin_1..`` (the control's bin means) when the run has the control.
    """
    if bins < 2:
        raise ValueError("bins must be at least 2")
    probes = [p for p in run.probes if measure in run.measures(p)]
    metric_probes = [p for p in probes if p != control] or [p for p in probes if p == control]
    has_control = control in probes
    rng = np.random.default_rng(seed)
    read = {p: (run.batch_scores(p), run.distance_matrix(p, measure))  # once per probe, not per phase
            for p in set(metric_probes) | ({control} if has_control else set())}
    rows = []
    for phase in range(run.num_phases):
        epochs = run.phase_epochs(phase)
        if len(epochs) == 0:
            continue
        ctrl = _bin_stats(run, control, phase, measure, bins, 0, rng, *read[control]) if has_control else None
        for probe in metric_probes:
            st = _bin_stats(run, probe, phase, measure, bins, n_perm, rng, *read[probe])
            best = int(st["best_bin"])
            p = st["p_value"]
            if np.isnan(p):
                verdict = "no test"
            elif p < alpha:
                verdict = "beats chance"
            else:
                verdict = "within chance"
            row = {
                "probe": probe, "score_label": run.score_label(probe), "phase": phase,
                "epochs": f"{epochs[0]}–{epochs[-1]}", "n_epochs": len(epochs), "lr": run.phase_lr(phase),
                "n_batches": len(read[probe][0]),
            }
            for i, v in enumerate(st["bin_means"]):
                row[f"bin_{i + 1}"] = float(v)
            row.update({
                "best_bin": best + 1, "best_label": f"{bin_label(best, bins)} ({bin_description(best, bins)})",
                "best_scores": st["best_scores"], "best_rel": st["best_rel"], "gain": 1.0 - st["best_rel"],
                "worst_bin": int(st["worst_bin"]) + 1, "spread": st["spread"],
                "outer_rel": st["outer_rel"], "middle_rel": st["middle_rel"],
                "chance_best_rel": st["chance_best_rel"], "p_value": p,
                "control_best_rel": ctrl["best_rel"] if ctrl else np.nan,
                "control_spread": ctrl["spread"] if ctrl else np.nan,
                "verdict": verdict,
            })
            if ctrl:
                for i, v in enumerate(ctrl["bin_means"]):
                    row[f"control_bin_{i + 1}"] = float(v)
            rows.append(row)
    return pd.DataFrame(rows)


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
