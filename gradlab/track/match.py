"""Gradient matching: batches whose mean gradient is close to the full gradient.

The ``match`` order is the achievable end of the comparison: not a score to sort by, but
batches chosen by their gradients. It follows the greedy gradient-matching idea of
GradMatch (Killamsetty et al., "GRAD-MATCH: Gradient Matching based Data Subset Selection
for Efficient Deep Model Training", ICML 2021; CORDS library) and CRAIG (Mirzasoleiman et
al., ICML 2020): pick examples one at a time so that their mean gradient approaches the
full gradient. Two differences, both because a probe batch must be an ordinary mini-batch:

- weights are fixed to 1 / m (a plain mean), where GradMatch's OMP fits a weight per example;
- the whole training set is partitioned into K batches of m, built one after another from
  the images still unused (so later batches match worse: batch k's score is its residual).

Gradients are a CountSketch of each image's whole per-sample gradient (``track.match_dim``
buckets), not GradMatch's last-layer gradient: D is measured on the whole gradient, and a
sketch preserves inner products in expectation (``gradlab.track.sketch``). Each weight tensor
is hashed as a tensor product, so that the fast scoring path sketches a layer from its
per-sample factors without forming its gradient; what this and the last layer cost in the
true D of the batches: ``benchmarks/match_sketch_accuracy.py``.

Greedy step for a batch holding j images with sketched sum s: add the unused image i that
minimises |s + g_i - (j + 1) t|^2 = |g_i|^2 - 2 <(j + 1) t - s, g_i> + const, i.e. one
matrix-vector product over the unused images per pick (N^2 d / 2 multiply-adds per epoch).
"""
from __future__ import annotations

import numpy as np
import torch


def greedy_match(sketches: torch.Tensor, target: torch.Tensor, batch_size: int, num_batches: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Partition rows of ``sketches`` ``[N, d]`` into ``num_batches`` batches of ``batch_size`` whose
    mean row is close to ``target`` ``[d]``. Returns ``(index [N], residual [K])``: batch k is
    ``index[k*m:(k+1)*m]`` and ``residual[k]`` = |mean of its rows - target|; the unused
    remainder (N - K*m images) ends the index."""
    g = sketches.to(torch.float32)
    t = target.to(g.device, torch.float32)
    ids = torch.arange(len(g), device=g.device)
    sq = g.pow(2).sum(1)
    picked: list[torch.Tensor] = []
    residual = np.zeros(num_batches)
    for k in range(num_batches):
        chosen, s = _one_batch(g, sq, t, batch_size)
        residual[k] = float((s / batch_size - t).norm())
        picked.append(ids[chosen])
        keep = torch.ones(len(g), dtype=torch.bool, device=g.device)
        keep[chosen] = False
        g, sq, ids = g[keep], sq[keep], ids[keep]  # compact: the next batch searches the unused only
    index = torch.cat(picked + [ids]).cpu().numpy().astype(np.int64)
    return index, residual


def _one_batch(g: torch.Tensor, sq: torch.Tensor, t: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy forward selection of ``m`` rows of ``g`` whose sum approaches ``m * t``."""
    s = torch.zeros_like(t)
    taken = torch.zeros(len(g), dtype=torch.bool, device=g.device)
    chosen = torch.empty(m, dtype=torch.long, device=g.device)
    for j in range(m):
        cost = sq - 2 * (g @ ((j + 1) * t - s))
        cost[taken] = float("inf")
        i = int(torch.argmin(cost))
        taken[i] = True
        chosen[j] = i
        s += g[i]
    return chosen, s
