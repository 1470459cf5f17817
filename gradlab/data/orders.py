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

from gradlab.data import BATCHINGS, GRADIENT_ORDER_NAMES, probe_name
from gradlab.data.datasets import BatchLoader, ImageSet, num_batches
from gradlab.errors import ConfigError
from gradlab.metrics import get_metric
from gradlab.track.tracker import ProbeBatches

RANDOM = "random"
SHUFFLE = "shuffle"  # training only: a new permutation every epoch, not an order


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
    return get_metric(metric).compute(data.images)


def random_order(n: int, batch_size: int, seed: int) -> Order:
    rng = np.random.default_rng([seed, 0x5EED])
    k = num_batches(n, batch_size)
    return Order(RANDOM, rng.permutation(n).astype(np.int64), np.arange(k, dtype=np.float64), "batch number")


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
    index = m.sort(scores).astype(np.int64)
    if batching == "stratified":
        index = stratify(index, batch_size)
    return Order(probe_name(metric, batching), index, batch_means(m.primary(scores), index, batch_size),
                 m.label or metric, batching)


def build_order(name: str, data: ImageSet, batch_size: int, seed: int, scores: ScoreFn = compute_scores,
                batching: str = "contiguous") -> Order:
    """The order called ``name`` over ``data``: ``random`` or a metric name, cut by ``batching``
    (``random`` has one cut: any cut of a random order is another random order)."""
    if batching not in BATCHINGS:
        raise ConfigError(f"unknown batching {batching!r}; choose one of {', '.join(BATCHINGS)}")
    if name == RANDOM:
        return random_order(len(data), batch_size, seed)
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
        self._idx = loader.batch_indices(torch.from_numpy(order.index))

    def batches(self, ks: Sequence[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for k in range(self.num_batches) if ks is None else ks:
            yield self.loader.get(self._idx[k])


def _imageset(dataset: Any, name: str | None) -> ImageSet:
    if isinstance(dataset, ImageSet):
        return dataset
    from gradlab.data.userdata import to_imageset

    return to_imageset(dataset, name or type(dataset).__name__)


def batches(dataset: Any, order: str = RANDOM, batch_size: int = 256, *, batching: str = "contiguous",
            seed: int = 0, device: str | torch.device = "cpu", cache: str | Path | None = None,
            name: str | None = None) -> ProbeBatches:
    """Probe batches of ``dataset`` for ``gradlab.Tracker(probes=...)``: sorted by a metric
    (``intensity``, ``hsv``, ``edges``, ``lpips``), shuffled (``random``), or a gradient-informed
    order rebuilt at every epoch's theta_e (``loss``, ``gradnorm``, ``align``, ``proj``,
    ``match``; see ``gradient_batches`` to share one scoring pass between several).

    ``batching``: ``contiguous`` (the paper's cut of the sorted order) or ``stratified``
    (batch k takes sorted positions k, k + K, ...). ``dataset``: an ``ImageSet`` or a
    torchvision-style dataset of ``(image, label)`` with PIL images or uint8 tensors, all one
    size. ``cache``: an HDF5 score cache (as written by ``gradlab scores``) that keeps metric
    scores across runs, keyed by the images' fingerprint. Batches are normalised with the
    dataset's own mean/std (``ImageSet.mean``/``std``).
    """
    if order in GRADIENT_ORDER_NAMES:
        probes = gradient_batches(dataset, [order], batch_size, batchings=[batching], device=device, name=name)
        return probes[probe_name(order, batching)]
    data = _imageset(dataset, name)
    score_fn: ScoreFn = compute_scores
    if cache is not None:
        from gradlab.data.scores import cached_scores

        score_fn = cached_scores(cache)
    if len(data) < batch_size:
        raise ConfigError(f"the dataset has {len(data)} images, fewer than batch_size = {batch_size}")
    loader = BatchLoader(data, torch.device(device), batch_size)
    return OrderBatches(build_order(order, data, batch_size, seed, score_fn, batching), loader)


def gradient_batches(dataset: Any, orders: Sequence[str], batch_size: int = 256, *,
                     batchings: Sequence[str] = ("contiguous",), device: str | torch.device = "cpu",
                     max_bytes: int = 256 << 20, match_dim: int = 256, seed: int = 0,
                     name: str | None = None) -> dict[str, ProbeBatches]:
    """Gradient-informed probes (``loss``, ``gradnorm``, ``align``, ``proj``, ``match``) of
    ``dataset``, each cut every way in ``batchings`` it supports, keyed by probe name
    (``align``, ``align@strat``), all sharing one per-sample scoring pass per epoch
    (``gradlab.track.gradorders``). ``align``, ``proj`` and ``match`` need a ``random``
    probe beside them: its pass gives the full gradient. ``max_bytes`` bounds the per-sample
    gradients held at once; ``match_dim`` is the CountSketch width of ``match``."""
    from gradlab.track.gradorders import gradient_probes

    data = _imageset(dataset, name)
    if len(data) < batch_size:
        raise ConfigError(f"the dataset has {len(data)} images, fewer than batch_size = {batch_size}")
    loader = BatchLoader(data, torch.device(device), batch_size)
    return gradient_probes(loader, orders, batchings, max_bytes, match_dim, seed)
