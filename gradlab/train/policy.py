"""Training policies: which batches an epoch trains on (``train.policy``).

The best-minibatch paper closes with two recommendations (its section 6), which these policies
turn into training interventions that ``gradlab results`` compares with shuffled training:

- R1, "slightly faster convergence by removing minibatches with extremely low or high
  intensities": ``drop_extremes`` trains on the batches of the metric's contiguous cut less the
  bottom and top quartile of batches by mean metric.
- R2, "only considering mini-batches with high intensity images ... during the first training
  phase": ``high_first`` trains phase 0 on the upper half of those batches, then shuffles as usual.

``batches`` trains on every batch of the contiguous cut and is the control for batch homogeneity:
R1 and R2 change both *which* images are seen and *that* each batch is metric-homogeneous, and
only the comparison with ``batches`` separates the two. The cut's batches are fixed sets of images
(as in the paper, which sorted once); their visiting order is reshuffled each epoch from the run's
data generator, so that the intervention is the selection, not a curriculum from dark to bright.

Each function maps ``(batches, phase, generator)`` to the epoch's image order, a 1-D index tensor
whose length is a multiple of the batch size. ``batches`` is ``[K, B]`` dataset indices, row k the
k-th batch of the contiguous cut, with ``batch_score [K]`` its mean metric.
"""
from __future__ import annotations

import numpy as np
import torch


def _visit(rows: np.ndarray, batches: np.ndarray, gen: torch.Generator) -> torch.Tensor:
    """The batches ``rows`` of ``batches``, in a random order drawn from ``gen``."""
    perm = torch.randperm(len(rows), generator=gen).numpy()
    return torch.from_numpy(np.ascontiguousarray(batches[rows[perm]]).reshape(-1))


def _ranked(batch_score: np.ndarray) -> np.ndarray:
    """Batch numbers from the lowest mean metric to the highest (stable for ties)."""
    return np.argsort(batch_score, kind="stable")


def shuffle(batches: np.ndarray | None, batch_score: np.ndarray | None, phase: int, gen: torch.Generator) -> None:
    """Plain training: ``None`` leaves the epoch to the runner's order (``track.order``)."""
    return None


def all_batches(batches: np.ndarray, batch_score: np.ndarray, phase: int, gen: torch.Generator) -> torch.Tensor:
    """Every batch of the cut, in a new random order each epoch (the homogeneity control)."""
    return _visit(np.arange(len(batches)), batches, gen)


def drop_extremes(batches: np.ndarray, batch_score: np.ndarray, phase: int, gen: torch.Generator) -> torch.Tensor:
    """R1: the middle half of the batches by mean metric (bottom and top quartile dropped), every epoch."""
    k = len(batches)
    q = k // 4  # batches in each dropped quartile; K < 4 drops none
    return _visit(_ranked(batch_score)[q: k - q], batches, gen)


def high_first(batches: np.ndarray, batch_score: np.ndarray, phase: int, gen: torch.Generator) -> torch.Tensor | None:
    """R2: in phase 0, the upper half of the batches by mean metric; later phases shuffle every image
    (``None``: the runner's usual permutation)."""
    if phase > 0:
        return None
    k = len(batches)
    return _visit(_ranked(batch_score)[k - max(1, k // 2):], batches, gen)
