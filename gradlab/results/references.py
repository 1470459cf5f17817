"""Where each image metric sits between random batches (0) and the `search` reference (1), per
phase (studies/reference_orders.toml, issue 22's achievable end with BatchNorm).

Per seed, a probe's gain is 1 - its mean D in random units, and its fraction of the reference's
gain is gain / gain(search); both get a t-interval over seeds. `search` builds its batches at
each theta_e to minimise the real train-mode D, so it is the closest batches gradlab can show.
"""
from __future__ import annotations

import numpy as np

from gradlab.registry import CLASS_CONTROL, RANDOM, order_kind
from gradlab.results import stats
from gradlab.results.common import seed_means
from gradlab.results.markdown import ci, table
from gradlab.runfile.reader import Run

REFERENCE = "search"


def _rows_order(probes: list[str]) -> list[str]:
    """Controls first, then image metrics, then gradient-informed orders, the reference last."""
    rank = {"control": 0, "metric": 1, "gradient": 2}
    return sorted(probes, key=lambda p: (p == REFERENCE, rank[order_kind(p)]))


def reference_table(runs: list[Run]) -> str:
    """Per probe and phase: mean D in random units, and its gain as a fraction of search's gain."""
    probes = _rows_order([p for p in runs[0].probes if p != RANDOM])
    phases = range(runs[0].num_phases)
    rows = []
    for p in probes:
        cells = []
        for ph in phases:
            d = seed_means(runs, p, ph, RANDOM)
            ref = 1.0 - seed_means(runs, REFERENCE, ph, RANDOM)
            frac = np.where(ref > 0, (1.0 - d) / np.where(ref > 0, ref, 1.0), np.nan)
            cells += [ci(*stats.interval(d)), "–" if p == REFERENCE else ci(*stats.interval(frac))]
        rows.append([f"`{p}`"] + cells)
    head = ["probe"]
    for ph in phases:
        head += [f"phase {ph}: D (random units)", f"phase {ph}: fraction of search's gain"]
    return table(head, rows)


def search_costs(runs: list[Run]) -> str:
    """The search's recorded effort per epoch (probe attributes and quantities it stored)."""
    rows = []
    for i, r in enumerate(runs):
        t = r.epoch_table(REFERENCE)
        cols = [c for c in t.columns if c.startswith("search_")]
        for _, row in t.iterrows():
            rows.append([str(i), str(int(row["epoch"]))] + [f"{row[c]:.4g}" for c in cols])
    cols = [c for c in runs[0].epoch_table(REFERENCE).columns if c.startswith("search_")]
    return table(["seed #", "epoch"] + cols, rows) if cols else ""


__all__ = ["reference_table", "search_costs", "CLASS_CONTROL"]
