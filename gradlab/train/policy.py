"""Training policies: which images an epoch trains on, and in which batches (``train.policy``).

The best-minibatch paper closes (section 5, Conclusions) with two recommendations, which these
policies turn into training interventions, each with a control that differs from it in one thing
and takes the same number of optimisation steps on the same number of images:

- R1, "slightly faster convergence by removing minibatches with extremely low or high
  intensities". The paper's training batches are the metric-sorted (contiguous) batches, so R1 is
  tested twice:

  - batch level: ``drop_extreme_batches`` trains on the sorted batches less those whose mean
    metric lies in the lowest and the highest ``R1_OUTER`` (10%) of the batches (symmetric: the
    same count at each end); its control ``drop_random_batches`` drops as many sorted batches
    chosen at random (fixed for the run). Both visit the kept batches in a new random order each
    epoch. ``batches`` (every sorted batch) is the homogeneity control of both.
  - image level: ``drop_extreme_images`` trains shuffled batches of the images inside the middle
    80% by the metric (the outer 10% on each side dropped: the paper's "middle 80 percent");
    its control ``drop_random_images`` drops as many images chosen at random (fixed for the run).
- R2, "only considering mini-batches with high intensity images ... during the first training
  phase" (the "upper quartile" of the paper's first phase): ``upper_quartile_first`` trains
  phase 0 on shuffled batches of the upper-quartile images by the metric, then every image
  shuffled; its control ``random_quarter_first`` trains phase 0 on a random quarter of the
  images (fixed for the run).

And gradlab's own finding turned into an intervention: class-stratified random batches are
closer to the full gradient than random ones (the class-mix page), so does training on them
converge faster? ``class`` draws class-stratified random batches anew every epoch (the
``random@class`` cut of a fresh permutation), against ``shuffle``: the same images, the same
number of steps.

Each policy maps ``(cut, phase, gen)`` to the epoch's image order, a 1-D index tensor (the
training loop takes its full batches in that order), or ``None`` for the runner's usual order.
``cut`` is a ``PolicyInput``; ``gen`` is the run's data generator (the visiting order, redrawn
every epoch); the fixed random choices of the controls come from the run's seed instead, so that
they are the same set every epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

R1_OUTER = 0.10  # R1: the share of batches (or images) dropped at EACH end of the metric: middle 80% kept
R2_UPPER = 0.25  # R2: the share of images phase 0 trains on (the upper quartile, or a random quarter)


@dataclass(frozen=True)
class PolicyInput:
    """What a policy may read: the metric's contiguous cut and the training set's labels."""

    index: np.ndarray  # int64 [N]: dataset indices sorted by the metric, ascending (ties: stable)
    batch_size: int  # m: batch k of the contiguous cut is index[k*m:(k+1)*m]
    batch_score: np.ndarray  # float64 [K]: each contiguous batch's mean metric
    labels: np.ndarray | None  # int64 [N] class of every dataset index (None: no class labels)
    seed: int  # the run's seed (train.seed): the controls' fixed random choices

    @property
    def batches(self) -> np.ndarray:
        """``[K, m]``: the contiguous cut's batches (the R images past K*m left out)."""
        k = len(self.batch_score)
        return self.index[: k * self.batch_size].reshape(k, self.batch_size)

    def rng(self, salt: int) -> np.random.Generator:
        """A generator fixed by the run's seed and the policy (``salt``): the same draw every epoch."""
        return np.random.default_rng([self.seed, 0x901C, salt])


def _visit(rows: np.ndarray, batches: np.ndarray, gen: torch.Generator) -> torch.Tensor:
    """The batches ``rows`` of ``batches``, in a random order drawn from ``gen``."""
    perm = torch.randperm(len(rows), generator=gen).numpy()
    return torch.from_numpy(np.ascontiguousarray(batches[rows[perm]]).reshape(-1))


def _shuffled(images: np.ndarray, gen: torch.Generator) -> torch.Tensor:
    """``images`` (dataset indices) in a new random order: shuffled batches of just these images."""
    perm = torch.randperm(len(images), generator=gen).numpy()
    return torch.from_numpy(np.ascontiguousarray(images[perm]))


def _ranked(batch_score: np.ndarray) -> np.ndarray:
    """Batch numbers from the lowest mean metric to the highest (stable for ties)."""
    return np.argsort(batch_score, kind="stable")


def outer_count(n: int, share: float = R1_OUTER) -> int:
    """How many of ``n`` items (batches or images) one end of R1 drops: round(share * n), the same
    at both ends, so the dropped set is symmetric; fewer than n / 2 so something is kept."""
    return min(int(round(share * n)), (n - 1) // 2)


def shuffle(cut: PolicyInput | None, phase: int, gen: torch.Generator) -> None:
    """Plain training: ``None`` leaves the epoch to the runner's order (``track.order``)."""
    return None


def all_batches(cut: PolicyInput, phase: int, gen: torch.Generator) -> torch.Tensor:
    """Every batch of the cut, in a new random order each epoch (the homogeneity control)."""
    return _visit(np.arange(len(cut.batch_score)), cut.batches, gen)


def drop_extreme_batches(cut: PolicyInput, phase: int, gen: torch.Generator) -> torch.Tensor:
    """R1, batch level: the sorted batches less the ``R1_OUTER`` lowest and highest by mean metric."""
    k = len(cut.batch_score)
    q = outer_count(k)
    return _visit(_ranked(cut.batch_score)[q: k - q], cut.batches, gen)


def drop_random_batches(cut: PolicyInput, phase: int, gen: torch.Generator) -> torch.Tensor:
    """R1's batch-level control: the sorted batches less as many as R1 drops, chosen at random once."""
    k = len(cut.batch_score)
    keep = np.sort(cut.rng(1).permutation(k)[: k - 2 * outer_count(k)])
    return _visit(keep, cut.batches, gen)


def drop_extreme_images(cut: PolicyInput, phase: int, gen: torch.Generator) -> torch.Tensor:
    """R1, image level: shuffled batches of the images inside the middle of the metric (the
    ``R1_OUTER`` lowest- and highest-scored images dropped)."""
    n = len(cut.index)
    q = outer_count(n)
    return _shuffled(cut.index[q: n - q], gen)


def drop_random_images(cut: PolicyInput, phase: int, gen: torch.Generator) -> torch.Tensor:
    """R1's image-level control: shuffled batches of all images less as many as R1 drops, at random."""
    n = len(cut.index)
    return _shuffled(np.sort(cut.rng(2).permutation(cut.index)[: n - 2 * outer_count(n)]), gen)


def upper_quartile_first(cut: PolicyInput, phase: int, gen: torch.Generator) -> torch.Tensor | None:
    """R2: phase 0 on shuffled batches of the upper-quartile images by the metric; later phases
    every image, shuffled (``None``: the runner's usual permutation)."""
    if phase > 0:
        return None
    n = len(cut.index)
    return _shuffled(cut.index[n - max(1, int(round(R2_UPPER * n))):], gen)


def random_quarter_first(cut: PolicyInput, phase: int, gen: torch.Generator) -> torch.Tensor | None:
    """R2's control: phase 0 on shuffled batches of a random quarter of the images (the same
    quarter every epoch of phase 0), then every image shuffled."""
    if phase > 0:
        return None
    n = len(cut.index)
    return _shuffled(np.sort(cut.rng(3).permutation(cut.index)[: max(1, int(round(R2_UPPER * n)))]), gen)


def class_batches(cut: PolicyInput, phase: int, gen: torch.Generator) -> torch.Tensor:
    """Class-stratified random batches, redrawn every epoch: a fresh permutation cut by class, so
    every batch holds every class in the dataset's proportion (up to one image)."""
    from gradlab.data.orders import by_class, class_labels

    labels = class_labels(cut.labels, 'train.policy = "class"')
    perm = torch.randperm(len(labels), generator=gen).numpy()
    return torch.from_numpy(by_class(perm, cut.batch_size, labels))
