"""``ProbeBatches``: what the tracker reads a probe order from.

A probe order is a fixed list of batches (``gradlab.data.orders.OrderBatches`` from a metric or
random order, ``IterableProbe`` around a user's re-iterable of ``(x, y)``), or one that is
rebuilt at every theta_e (``per_epoch``, the gradient-informed orders of
``gradlab.track.gradorders``). The tracker never needs to know which.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from gradlab.data.inputs import USER_BATCHES, Preprocessing
from gradlab.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]


class ProbeBatches:
    """One probe order: fixed batches plus what the run file records about them.

    ``batches(ks)`` yields batch k for each k in ``ks`` (all, in order, when None), on any
    device (the tracker moves them to the model's). ``gradlab.orders.batches`` builds one
    from an image dataset and a metric; any re-iterable of ``(x, y)`` is wrapped by
    ``as_probe``.
    """

    num_batches: int
    batch_size: int
    index: np.ndarray  # int64 [N] dataset indices in order (empty when unknown)
    batch_score: np.ndarray  # float64 [K]
    score_label: str
    # An order rebuilt at every theta_e (gradient-informed, ``gradlab.track.gradorders``): the
    # tracker calls ``prepare`` before its pass and stores index and batch_score per epoch.
    per_epoch = False
    needs_full = False  # prepare() needs the full gradient of the reference probe's pass
    attrs: Mapping[str, Any] = {}  # extra attributes of the probe's group in the run file (read only)
    # how the input tensors were made (recorded in the probe's group; gradlab.data.inputs)
    preprocessing: Preprocessing | None = None
    batch_sizes: np.ndarray | None = None  # int64 [K] images per batch when they differ; None: batch_size each

    def prepare(self, frozen: Any, full: torch.Tensor | None) -> None:
        """Rebuild the order at theta_e (``frozen``, a ``gradlab.track.probe.FrozenModel``);
        ``full``: this epoch's full gradient (float64 ``[P]``), or None."""

    def epoch_record(self) -> Mapping[str, float]:
        """After ``prepare``: per-epoch values of how the order was built (the ``search`` order's
        cost and moves), each stored as ``/probes/<o>/<key>`` ``[E]``; none for most orders."""
        return {}

    def batches(self, ks: Sequence[int] | None = None) -> Iterator[Batch]:
        raise NotImplementedError


class IterableProbe(ProbeBatches):
    """A user's re-iterable of ``(x, y)`` batches (a list, a non-shuffling DataLoader, ...).

    The batches must be the same at every epoch; their sizes may differ (the full gradient is
    the size-weighted mean, the noise scale uses the unequal-size estimator). One pass over the
    iterable at construction checks every batch, so anything unsupported is refused then, in one
    line, never after an epoch was trained: a one-shot iterator, a shuffling DataLoader, no
    batches, a batch that is not an ``(x, y)`` pair of tensors, or whose x and y disagree in
    length, or that is empty. Batch scores are the batch numbers; the tensors are used as given.
    """

    preprocessing = Preprocessing(USER_BATCHES)

    def __init__(self, name: str, source: Iterable[Batch]):
        if iter(source) is source:
            raise ConfigError(f"probe {name!r}: a one-shot iterator cannot be read at every epoch; "
                              f"pass a list or a DataLoader (shuffle=False)")
        sampler = getattr(source, "sampler", None)
        if isinstance(sampler, torch.utils.data.RandomSampler):
            raise ConfigError(f"probe {name!r}: its DataLoader shuffles, so its batches change every epoch; "
                              f"use shuffle=False (a probe order must be fixed)")
        self.source = source
        sizes = np.array([_batch_size(name, k, b) for k, b in enumerate(source)], dtype=np.int64)
        if not len(sizes):
            raise ConfigError(f"probe {name!r} has no batches")
        self.num_batches = len(sizes)
        self.batch_size = int(sizes.max())
        self.batch_sizes = sizes if np.any(sizes != sizes[0]) else None
        self.index = np.zeros(0, dtype=np.int64)
        self.batch_score = np.arange(self.num_batches, dtype=np.float64)
        self.score_label = "batch number"

    def batches(self, ks: Sequence[int] | None = None) -> Iterator[Batch]:
        want = None if ks is None else set(ks)
        for k, (x, y) in enumerate(self.source):
            if want is None or k in want:
                yield x, y


def _batch_size(name: str, k: int, batch: Any) -> int:
    """Images in batch ``k`` of a user's probe, or one ``ConfigError`` saying what is wrong with it."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ConfigError(f"probe {name!r}: batch {k} is a {type(batch).__name__}, not an (x, y) pair; "
                          f"a probe yields (inputs, targets) batches")
    x, y = batch
    if not (torch.is_tensor(x) and torch.is_tensor(y)):
        what = type(x).__name__ if not torch.is_tensor(x) else type(y).__name__
        raise ConfigError(f"probe {name!r}: batch {k} holds a {what}; x and y must be tensors")
    if x.dim() == 0 or y.dim() == 0 or len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"probe {name!r}: batch {k} has {len(x) if x.dim() else 0} inputs and "
                          f"{len(y) if y.dim() else 0} targets; each batch needs as many of both, at least one")
    return len(y)


def as_probe(name: str, source: Iterable[Batch] | ProbeBatches) -> ProbeBatches:
    return source if isinstance(source, ProbeBatches) else IterableProbe(name, source)
