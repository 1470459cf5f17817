"""Dataset orders: a permutation of the training set cut into fixed batches.

An order named after a metric sorts images ascending by that metric's key; ``random`` is a
seeded shuffle, the control the paper lacked. Each order carries per-batch scores (the mean
metric value of the batch; for ``random``, the batch number) used to label heatmaps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from gradlab.data.datasets import BatchLoader, ImageSet, num_batches
from gradlab.errors import ConfigError
from gradlab.metrics import get_metric
from gradlab.track.tracker import ProbeBatches

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


# --------------------------------------------------------------------------- probe batches

class OrderBatches(ProbeBatches):
    """The fixed batches of an ``Order`` over an ``ImageSet``, served by a ``BatchLoader``
    (normalised float32, on the loader's device, never augmented)."""

    def __init__(self, order: Order, loader: BatchLoader):
        self.order, self.loader = order, loader
        self.num_batches = order.num_batches
        self.batch_size = loader.batch_size
        self.index, self.batch_score, self.score_label = order.index, order.batch_score, order.score_label
        self._idx = loader.batch_indices(torch.from_numpy(order.index))

    def batches(self, ks: Sequence[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for k in range(self.num_batches) if ks is None else ks:
            yield self.loader.get(self._idx[k])


def batches(dataset: Any, order: str = RANDOM, batch_size: int = 256, *, seed: int = 0,
            device: str | torch.device = "cpu", cache: str | Path | None = None,
            name: str | None = None) -> OrderBatches:
    """Fixed probe batches of ``dataset`` sorted by a metric (``intensity``, ``hsv``, ``edges``,
    ``lpips``) or shuffled (``random``), for ``gradlab.Tracker(probes=...)``.

    ``dataset``: an ``ImageSet`` or a torchvision-style dataset of ``(image, label)`` with
    PIL images or uint8 tensors, all one size. ``cache``: an HDF5 score cache (as written by
    ``gradlab scores``) that keeps metric scores across runs, keyed by the images' fingerprint.
    Batches are normalised with the dataset's own mean/std (``ImageSet.mean``/``std``).
    """
    if isinstance(dataset, ImageSet):
        data = dataset
    else:
        from gradlab.data.userdata import to_imageset

        data = to_imageset(dataset, name or type(dataset).__name__)
    score_fn: ScoreFn = compute_scores
    if cache is not None:
        from gradlab.data.scores import cached_scores

        score_fn = cached_scores(cache)
    if len(data) < batch_size:
        raise ConfigError(f"the dataset has {len(data)} images, fewer than batch_size = {batch_size}")
    loader = BatchLoader(data, torch.device(device), batch_size)
    return OrderBatches(build_order(order, data, batch_size, seed, score_fn), loader)
