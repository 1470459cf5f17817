"""Where each image metric sits between random batches and gradient-informed reference orders.

Every order x cut (``intensity``, ``intensity@strat``, ``align``, ``align@strat``, ``match``, ...)
is measured in the common unit, the ``random`` control's mean D at the same epoch
(``gradlab.report.units``): 1 = a typical random batch, below 1 = closer to the full gradient.
Per training phase and probe:

- ``mean_rel``: the mean over the phase's epochs and all batches (how good the order's
  batches are on average);
- ``best_rel``: the closest score bin (quantile bins of the phase profile, as the phase
  summary's), the best a user could do by picking batches of that order by their score;
- ``gain_mean`` = 1 - mean_rel and ``gain_best`` = 1 - best_rel (> 0: better than random);
- ``frac_mean`` / ``frac_best``: the probe's gain as a fraction of the best gradient-informed
  reference's gain in that phase (``ref_mean`` / ``ref_best`` name it); NaN when no reference
  beats random there (no positive gain to divide by).

With several seeds of one study every value is the seed mean, with a 95% Student-t interval
(``*_ci_low``/``*_ci_high``, n - 1 degrees of freedom). Pure functions of stored data.

Two controls: ``random``, and ``random@class`` (class-stratified random batches, a run with
``track.batching`` including ``class``). ``control=`` chooses the unit of every column above;
when the runs also have the other control, each row gives its mean and best-bin D in that one
too (``class_mean_rel``, ``class_best_rel`` and their intervals for ``random@class``;
``random_*`` when ``control="random@class"``), so one table answers "is it the image property
or the class mix?". Runs without ``random@class`` give the table as before.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from gradlab.registry import CLASS_CONTROL, order_kind, split_probe_name
from gradlab.report.summary import bin_means, phase_profile, score_bins, t_interval
from gradlab.report.units import CONTROL, CONTROLS, has_control
from gradlab.runfile.reader import Run


probe_kind = order_kind  # control | gradient | metric (image metrics, user orders)
# the column prefix of a second unit: class_mean_rel (random@class's unit), random_mean_rel
UNIT_PREFIX = {CONTROL: "random", CLASS_CONTROL: "class"}
_UNIT_COLUMNS = ("mean_rel", "mean_ci_low", "mean_ci_high", "best_rel", "best_ci_low", "best_ci_high")


def _probe_rows(runs: Sequence[Run], probe: str, phase: int, measure: str, bins: int,
                control: str = CONTROL) -> dict[str, object]:
    """Seed-mean mean D and best-bin D of one probe in one phase, with t-intervals over seeds,
    in ``control``'s unit."""
    epochs = runs[0].phase_epochs(phase)
    prof = np.stack([phase_profile(r, probe, phase, measure, unit=control) for r in runs])  # [S, K]
    b = score_bins(runs[0].batch_scores(probe, epochs), bins)
    bm = bin_means(prof, b, bins)  # [S, bins]
    mean, lo, hi = t_interval(prof.mean(axis=1, keepdims=True))
    bmean, blo, bhi = t_interval(bm)
    best = int(np.nanargmin(bmean))
    order, batching = split_probe_name(probe)
    return {"phase": phase, "probe": probe, "order": order, "batching": batching, "kind": probe_kind(probe),
            "n_seeds": len(runs), "n_batches": prof.shape[1], "mean_rel": float(mean[0]),
            "mean_ci_low": float(lo[0]), "mean_ci_high": float(hi[0]), "best_bin": best + 1,
            "best_rel": float(bmean[best]), "best_ci_low": float(blo[best]), "best_ci_high": float(bhi[best])}


def _fractions(df: pd.DataFrame) -> pd.DataFrame:
    """Gains, and each probe's gain as a fraction of the phase's best reference's gain."""
    df["gain_mean"] = 1.0 - df.mean_rel
    df["gain_best"] = 1.0 - df.best_rel
    for what in ("mean", "best"):
        df[f"ref_{what}"], df[f"frac_{what}"] = "", np.nan
        for phase, g in df.groupby("phase"):
            refs = g[g.kind == "gradient"]
            if refs.empty:
                continue
            top = refs.loc[refs[f"gain_{what}"].idxmax()]
            df.loc[g.index, f"ref_{what}"] = top.probe
            if top[f"gain_{what}"] > 0:
                df.loc[g.index, f"frac_{what}"] = g[f"gain_{what}"] / top[f"gain_{what}"]
    return df


def reference_comparison(runs: Run | Sequence[Run], measure: str = "l2", bins: int = 4,
                         control: str = CONTROL) -> pd.DataFrame:
    """One row per (phase, probe): mean and best-bin D in ``control``'s unit (the random control's
    by default; seed mean and 95% interval for several seeds of one study), gains, and fractions
    of the best reference's gain, plus the mean and best-bin D in the other control's unit when
    every run has it (``class_*`` / ``random_*`` columns). Rows are sorted by phase, then
    ``mean_rel``. Needs the ``control`` probe (the unit)."""
    runs = [runs] if isinstance(runs, Run) else list(runs)
    if bins < 2:
        raise ValueError("bins must be at least 2")
    for r in runs:
        if not has_control(r, measure, control):
            how = "" if control == CONTROL else " and class to track.batching"
            raise KeyError(f"{r.path} has no {control!r} probe with measure {measure!r}: the comparison is in its "
                           f"unit (add it to track.probes{how})")
    probes = [p for p in runs[0].probes if all(p in r.probes and measure in r.measures(p) for r in runs)]
    others = [c for c in CONTROLS if c != control and all(has_control(r, measure, c) for r in runs)]
    rows = []
    for ph in range(min(r.num_phases for r in runs)):
        if not len(runs[0].phase_epochs(ph)):
            continue
        for p in probes:
            row = _probe_rows(runs, p, ph, measure, bins, control)
            for other in others:  # the same probe in the other control's unit
                second = _probe_rows(runs, p, ph, measure, bins, other)
                row.update({f"{UNIT_PREFIX[other]}_{c}": second[c] for c in _UNIT_COLUMNS})
            rows.append(row)
    if not rows:
        return pd.DataFrame()
    df = _fractions(pd.DataFrame(rows))
    return df.sort_values(["phase", "mean_rel"], kind="stable").reset_index(drop=True)


def has_references(run: Run) -> bool:
    """Whether a run probed gradient-informed orders, or cuts other than the contiguous one
    (stratified, class; the comparison's subjects)."""
    return any(probe_kind(p) == "gradient" or split_probe_name(p)[1] != "contiguous" for p in run.probes)
