"""Dataset orders: a permutation of the training set cut into fixed batches.

An order named after a metric sorts images ascending by that metric's key; ``random`` is a
seeded shuffle, the control the paper lacked. Each order carries per-batch scores (the mean
metric value of the batch; for ``random``, the batch number) used to label heatmaps.

The cuts (``gradlab.registry.BATCHINGS``) turn a sorted order into batches: ``contiguous``
(the paper's), ``stratify`` (every batch spans the score range) and ``by_class`` (every batch
holds every class in the dataset's proportion, at one within-class quantile of the score).
A cut is ``cut(index, batch_size, labels) -> index``: it permutes the dataset indices
``index`` so that batch k is positions k*m .. (k+1)*m - 1 and the remainder is at the end;
``labels`` are the dataset's class labels (indexed by dataset index), which only ``by_class``
reads. ``random`` cut ``class`` is ``random@class``: class-stratified random batches, the
second control.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from gradlab import registry
from gradlab.data.datasets import BatchLoader, ImageSet, num_batches
from gradlab.data.probes import ProbeBatches
from gradlab.errors import ConfigError
from gradlab.metrics import get_metric, score_images
from gradlab.registry import RANDOM, SHUFFLE, probe_name  # noqa: F401  (SHUFFLE: the runner's import)


@dataclass(frozen=True)
class Order:
    name: str  # the probe name: the order's, plus its cut's suffix ("@strat", "@class"; gradlab.registry)
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
    return score_images(get_metric(metric), data.pixels(f"the {metric} metric"))


def random_order(n: int, batch_size: int, seed: int) -> Order:
    rng = np.random.default_rng([seed, 0x5EED])
    k = num_batches(n, batch_size)
    return Order(RANDOM, rng.permutation(n).astype(np.int64), np.arange(k, dtype=np.float64), "batch number")


def contiguous(index: np.ndarray, batch_size: int, labels: np.ndarray | None = None) -> np.ndarray:
    """The contiguous cut (the paper's): batch k is sorted positions k*m .. (k+1)*m - 1."""
    return index


def stratify(index: np.ndarray, batch_size: int, labels: np.ndarray | None = None) -> np.ndarray:
    """The stratified cut of a sorted order, as an order cut contiguously: batch k takes sorted
    positions k, k + K, k + 2K, ... (K = len // batch_size), so every batch spans the whole
    score range. The remainder stays at the end, dropped like the contiguous cut's."""
    k = len(index) // batch_size
    head = index[: k * batch_size].reshape(batch_size, k).T.reshape(-1)
    return np.concatenate([head, index[k * batch_size:]])


def class_labels(labels: np.ndarray | torch.Tensor | None, what: str = 'batching "class"',
                 fix: str = "cut it contiguous or stratified") -> np.ndarray:
    """One int64 class label per image, or one ``ConfigError`` (masks of a segmentation set) that
    ends with ``fix``."""
    arr = None if labels is None else np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if arr is None or arr.ndim != 1:
        got = "no labels" if arr is None else f"labels of shape {tuple(arr.shape)} (per-pixel masks?)"
        raise ConfigError(f"{what} needs one class label per image, and got {got}; a segmentation set has no "
                          f"class per image: {fix}")
    return arr.astype(np.int64, copy=False)


def by_class(index: np.ndarray, batch_size: int, labels: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """The class-balanced cut: homogeneous in the score, balanced in class.

    ``index`` is sorted by the score; each class keeps that order (its within-class ranking).
    With N images, m = ``batch_size``, K = N // m batches and R = N - K*m left over:

    1. **Remainder.** R images are left out, as by the other cuts, but from every class in
       proportion: class c (n_c images) gives r_c of them, R * n_c / N rounded by largest
       remainder (ties: lower label), never its last image while another class can give one.
       They are its r_c highest-scored images (the contiguous cut leaves out the highest-scored
       R overall) and stay at the end of the returned index.
    2. **Counts.** Class c's n'_c = n_c - r_c kept images give every batch f_c = n'_c // K or
       f_c + 1 of them (the e_c = n'_c - K*f_c extra ones go to e_c different batches), so
       every batch holds exactly m images and each class in the dataset's proportion up to one
       image. Which batches get a class's extra image: batch by batch, the classes that must
       (as many extras left as batches) and then those furthest below their proportional
       cumulative count k * n'_c / K (ties: lower label). A class with fewer kept images than
       K (f_c = 0) is in n'_c batches only, spread over the order: no class is dropped.
    3. **Quantile.** Batch k takes the next images of each class in its within-class order,
       so the images of every class in batch k sit at about the within-class quantiles
       k/K .. (k+1)/K: batch 0 holds each class's lowest scores, batch K - 1 its highest.

    Within a batch, images keep their order in ``index``. ``labels``: the class of every
    dataset index (``labels[index]`` are the sorted images' classes). Cutting a shuffled order
    gives class-stratified random batches (``random@class``).
    """
    index = np.asarray(index, dtype=np.int64)
    lab = class_labels(labels)[index]
    n, m = len(index), int(batch_size)
    k_batches = n // m
    if k_batches == 0:
        return index
    classes, inverse = np.unique(lab, return_inverse=True)
    positions = [np.flatnonzero(inverse == c) for c in range(len(classes))]  # sorted positions of each class
    sizes = np.array([len(p) for p in positions], dtype=np.int64)
    left = _apportion_remainder(sizes, n - k_batches * m)
    counts = _class_counts(sizes - left, k_batches, m)  # [K, C]
    starts = np.vstack([np.zeros(len(classes), dtype=np.int64), np.cumsum(counts, axis=0)])
    batches = [np.sort(np.concatenate([positions[c][starts[k, c]:starts[k + 1, c]] for c in range(len(classes))]))
               for k in range(k_batches)]
    rest = np.sort(np.concatenate([positions[c][sizes[c] - left[c]:] for c in range(len(classes))]))
    return index[np.concatenate(batches + [rest])]


def _apportion_remainder(sizes: np.ndarray, rest: int) -> np.ndarray:
    """How many of each class's images are left out (``by_class`` step 1): largest remainder
    of ``rest * n_c / N``, at most n_c - 1 per class while any class can give more."""
    quota = rest * sizes / max(int(sizes.sum()), 1)
    left = np.minimum(np.floor(quota).astype(np.int64), np.maximum(sizes - 1, 0))
    cap = np.maximum(sizes - 1, 0)
    while left.sum() < rest:
        open_ = left < cap
        if not open_.any():  # every class is down to one image: no way round leaving a class out
            cap, open_ = sizes, left < sizes
        deficit = np.where(open_, quota - left, -np.inf)
        left[int(np.argmax(deficit))] += 1  # argmax: the lowest label among equal deficits
    return left


def _class_counts(kept: np.ndarray, k_batches: int, batch_size: int) -> np.ndarray:
    """``[K, C]`` images of each class per batch (``by_class`` step 2): f_c or f_c + 1 of class
    c in every batch, rows summing to ``batch_size``, cumulative counts near k * n'_c / K."""
    base = kept // k_batches
    extras = kept - k_batches * base  # extra images of each class, to distinct batches
    per_batch = batch_size - int(base.sum())  # extra images each batch takes
    counts = np.tile(base, (k_batches, 1))
    done = np.zeros_like(kept)
    for k in range(k_batches):
        remaining = k_batches - k
        lag = (k + 1) * kept / k_batches - (done + base)  # how far below its proportional share
        forced = extras == remaining  # as many extras left as batches: each takes one
        order = np.lexsort((np.arange(len(kept)), -lag))  # most behind first, then the lower label
        free = [c for c in order if extras[c] > 0 and not forced[c]]
        take = np.flatnonzero(forced).tolist() + free[: per_batch - int(forced.sum())]
        counts[k, take] += 1
        extras[take] -= 1
        done += counts[k]
    return counts


def batch_means(values: np.ndarray, index: np.ndarray, batch_size: int) -> np.ndarray:
    """``[K]``: mean of the per-image ``values`` over each full batch of ``index``."""
    k = num_batches(len(index), batch_size)
    return values[index[: k * batch_size]].reshape(k, batch_size).mean(1)


def cut(batching: str, index: np.ndarray, batch_size: int, labels: np.ndarray | torch.Tensor | None = None
        ) -> np.ndarray:
    """``index`` (sorted) cut by ``batching`` (a ``gradlab.registry.BATCHINGS`` name); ``labels``:
    the dataset's class labels, needed by the cuts with the ``labels`` trait (``class``)."""
    entry = registry.BATCHINGS.check(batching)
    if registry.LABELS in entry.traits:
        labels = class_labels(labels, f'batching "{batching}"')
    return entry.load()(index, batch_size, labels)


def metric_order(metric: str, data: ImageSet, batch_size: int, scores: np.ndarray,
                 batching: str = "contiguous") -> Order:
    """Sort ``data`` ascending by ``scores``, cut it (``contiguous``, ``stratified`` or ``class``,
    which reads ``data.labels``) and score each full batch by its mean."""
    m = get_metric(metric)
    index = cut(batching, m.sort(scores).astype(np.int64), batch_size, data.labels)
    return Order(probe_name(metric, batching), index, batch_means(m.primary(scores), index, batch_size),
                 m.label or metric, batching)


def build_order(name: str, data: ImageSet, batch_size: int, seed: int, scores: ScoreFn = compute_scores,
                batching: str = "contiguous") -> Order:
    """The order called ``name`` over ``data``: ``random`` or a metric name, cut by ``batching``.
    ``random`` keeps its one shuffle under a cut by position (any such cut of a random order is
    another random order) and is cut by the cuts that read labels: ``random`` cut ``class`` is
    ``random@class``, class-stratified random batches (batch scores: the batch number)."""
    registry.BATCHINGS.check(batching)
    if name == RANDOM:
        order = random_order(len(data), batch_size, seed)
        if batching == "contiguous" or batching not in registry.random_cuts([batching]):
            return order
        return Order(probe_name(RANDOM, batching), cut(batching, order.index, batch_size, data.labels),
                     order.batch_score, order.score_label, batching)
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
