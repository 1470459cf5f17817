"""Dataset orders: a permutation of the training set cut into fixed batches.

An order named after a metric sorts images ascending by that metric's key; ``random`` is a
seeded shuffle, the control the paper lacked. Each order carries per-batch scores (the mean
metric value of the batch; for ``random``, the batch number) used to label heatmaps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from gradlab.data.datasets import ImageSet, num_batches
from gradlab.metrics import get_metric

RANDOM = "random"
SHUFFLE = "shuffle"  # training only: a new permutation every epoch, not an order


@dataclass(frozen=True)
class Order:
    name: str
    index: np.ndarray  # int64 [N]: dataset indices in order; batch k is index[k*m:(k+1)*m]
    batch_score: np.ndarray  # float64 [K]
    score_label: str

    @property
    def num_batches(self) -> int:
        return len(self.batch_score)


ScoreFn = Callable[[str, ImageSet], np.ndarray]


def compute_scores(metric: str, data: ImageSet) -> np.ndarray:
    """Scores of every image of ``data`` under ``metric`` (no cache)."""
    return get_metric(metric).compute(data.images)


def random_order(n: int, batch_size: int, seed: int) -> Order:
    rng = np.random.default_rng([seed, 0x5EED])
    k = num_batches(n, batch_size)
    return Order(RANDOM, rng.permutation(n).astype(np.int64), np.arange(k, dtype=np.float64), "batch number")


def metric_order(metric: str, data: ImageSet, batch_size: int, scores: np.ndarray) -> Order:
    """Sort ``data`` ascending by ``scores`` and score each full batch by its mean."""
    m = get_metric(metric)
    index = m.sort(scores).astype(np.int64)
    k = num_batches(len(index), batch_size)
    primary = m.primary(scores)[index[: k * batch_size]].reshape(k, batch_size)
    return Order(metric, index, primary.mean(1), m.label or metric)


def build_order(name: str, data: ImageSet, batch_size: int, seed: int, scores: ScoreFn = compute_scores) -> Order:
    """The order called ``name`` over ``data``: ``random`` or a metric name."""
    if name == RANDOM:
        return random_order(len(data), batch_size, seed)
    return metric_order(name, data, batch_size, scores(name, data))
