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


def search_costs(runs: list[Run], seeds: tuple[int, ...]) -> str:
    """The search's effort per seed and epoch, from its per-epoch record: batch gradients evaluated
    (and in probe passes, K each), seconds, moves proposed and accepted, and its mean distance to
    the random pass's full gradient before (the best start) and after, in random units."""
    rows = []
    for seed, r in zip(seeds, runs):
        t = r.epoch_table(REFERENCE)
        k = r.num_batches(REFERENCE)
        unit = r.distance_matrix(RANDOM).mean(axis=1)
        for _, row in t.iterrows():
            e = int(row["epoch"])
            rows.append([str(seed), str(e), f"{row['search_evals']:.0f} ({row['search_evals'] / k:.1f})",
                         f"{row['search_seconds']:.1f}",
                         f"{row['search_accepted']:.0f} of {row['search_proposed']:.0f}",
                         f"{row['search_d_before'] / unit[e]:.3f}", f"{row['search_d_after'] / unit[e]:.3f}"])
    return table(["seed", "epoch", "batch gradients (probe passes)", "seconds", "moves accepted",
                  "‖g_k − ∇_e(random)‖ before, random units", "after"], rows)


TARGET = 0.7  # issue 22: search's mean D below 0.7 of random batches' at every epoch


def targets(runs: list[Run], seeds: tuple[int, ...]) -> tuple[str, str]:
    """Per seed and epoch: search, intensity, intensity@class and random@class in random units, and one
    generated sentence counting the (seed, epoch) pairs where search is below each and below TARGET."""
    cols = ("intensity", "intensity@class", CLASS_CONTROL)
    rows, below = [], {c: 0 for c in (*cols, "target")}
    n = 0
    for seed, r in zip(seeds, runs):
        unit = r.distance_matrix(RANDOM).mean(axis=1)
        rel = {p: r.distance_matrix(p).mean(axis=1) / unit for p in (REFERENCE, *cols)}
        for e in range(r.epochs_done):
            n += 1
            for c in cols:
                below[c] += bool(rel[REFERENCE][e] < rel[c][e])
            below["target"] += bool(rel[REFERENCE][e] < TARGET)
            rows.append([str(seed), str(e)] + [f"{rel[p][e]:.3f}" for p in (REFERENCE, *cols)])
    text = (f"Over {n} (seed, epoch) pairs, `search`'s mean D is below `intensity`'s in {below['intensity']}, "
            f"below `intensity@class`'s in {below['intensity@class']}, below `random@class`'s in "
            f"{below[CLASS_CONTROL]}, and below {TARGET} of random's in {below['target']}.\n")
    return table(["seed", "epoch", "`search`", "`intensity`", "`intensity@class`", "`random@class`"], rows), text
