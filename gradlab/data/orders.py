"""Dataset orders: a permutation of the training set cut into fixed batches.

An order named after a metric sorts images ascending by that metric's key; ``random`` is a
seeded shuffle, the control the paper lacked. Each order carries per-batch scores (the mean
metric value of the batch; for ``random``, the batch number) used to label heatmaps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from gradlab import registry
from gradlab.data.datasets import BatchLoader, ImageSet, num_batches
from gradlab.data.probes import ProbeBatches
from gradlab.metrics import get_metric
from gradlab.registry import RANDOM, SHUFFLE, probe_name  # noqa: F401  (SHUFFLE: the runner's import)


@dataclass(frozen=True)
class Order:
    name: str  # the probe name: the order's, plus "@strat" for its stratified cut
    index: np.ndarray  # int64 [N]: dataset indices in order; batch k is index[k*m:(k+1)*m]
    batch_score: np.ndarray  # float64 [K]
    score_label: str
    batching: str = "contiguous"  # how the sorted order was cut into batches (see ``stratify``)

    @property
    def num_batches(self) -> int:
        return len(self.batch_score)


ScoreFn = Callable[[str, ImageSet], np.ndarray]


def compute_scores(metric: str, data: ImageSet) -> np.ndarray:
    """Scores of every image of ``data`` under ``metric`` (no cache)."""
    return get_metric(metric).compute(data.pixels(f"the {metric} metric"))


def random_order(n: int, batch_size: int, seed: int) -> Order:
    rng = np.random.default_rng([seed, 0x5EED])
    k = num_batches(n, batch_size)
    return Order(RANDOM, rng.permutation(n).astype(np.int64), np.arange(k, dtype=np.float64), "batch number")


def contiguous(index: np.ndarray, batch_size: int) -> np.ndarray:
    """The contiguous cut (the paper's): batch k is sorted positions k*m .. (k+1)*m - 1."""
    return index


def stratify(index: np.ndarray, batch_size: int) -> np.ndarray:
    """The stratified cut of a sorted order, as an order cut contiguously: batch k takes sorted
    positions k, k + K, k + 2K, ... (K = len // batch_size), so every batch spans the whole
    score range. The remainder stays at the end, dropped like the contiguous cut's."""
    k = len(index) // batch_size
    head = index[: k * batch_size].reshape(batch_size, k).T.reshape(-1)
    return np.concatenate([head, index[k * batch_size:]])


def batch_means(values: np.ndarray, index: np.ndarray, batch_size: int) -> np.ndarray:
    """``[K]``: mean of the per-image ``values`` over each full batch of ``index``."""
    k = num_batches(len(index), batch_size)
    return values[index[: k * batch_size]].reshape(k, batch_size).mean(1)


def metric_order(metric: str, data: ImageSet, batch_size: int, scores: np.ndarray,
                 batching: str = "contiguous") -> Order:
    """Sort ``data`` ascending by ``scores``, cut it (``contiguous`` or ``stratified``) and score
    each full batch by its mean."""
    m = get_metric(metric)
    index = registry.BATCHINGS.load(batching)(m.sort(scores).astype(np.int64), batch_size)
    return Order(probe_name(metric, batching), index, batch_means(m.primary(scores), index, batch_size),
                 m.label or metric, batching)


def build_order(name: str, data: ImageSet, batch_size: int, seed: int, scores: ScoreFn = compute_scores,
                batching: str = "contiguous") -> Order:
    """The order called ``name`` over ``data``: ``random`` or a metric name, cut by ``batching``
    (``random`` has one cut: any cut of a random order is another random order)."""
    registry.BATCHINGS.check(batching)
    if name == RANDOM:
        return random_order(len(data), batch_size, seed)
    data.pixels(f"the {name!r} order")  # one line before any scoring when there are no raw pixels
    return metric_order(name, data, batch_size, scores(name, data), batching)


# --------------------------------------------------------------------------- probe batches

class OrderBatches(ProbeBatches):
    """The fixed batches of an ``Order`` over an ``ImageSet``, served by a ``BatchLoader``
    (normalised float32, on the loader's device, never augmented)."""

    def __init__(self, order: Order, loader: BatchLoader):
        self.order, self.loader = order, loader
        self.num_batches = order.num_batches
        self.batch_size = loader.batch_size
        self.index, self.batch_score, self.score_label = order.index, order.batch_score, order.score_label
        self.attrs = {"batching": order.batching}
        self.preprocessing = loader.data.preprocessing()
        self._idx = loader.batch_indices(torch.from_numpy(order.index))

    def batches(self, ks: Sequence[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for k in range(self.num_batches) if ks is None else ks:
            yield self.loader.get(self._idx[k])
