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

    def prepare(self, frozen: Any, full: torch.Tensor | None) -> None:
        """Rebuild the order at theta_e (``frozen``, a ``gradlab.track.probe.FrozenModel``);
        ``full``: this epoch's full gradient (float64 ``[P]``), or None."""

    def batches(self, ks: Sequence[int] | None = None) -> Iterator[Batch]:
        raise NotImplementedError


class IterableProbe(ProbeBatches):
    """A user's re-iterable of ``(x, y)`` batches (a list, a non-shuffling DataLoader, ...).

    The batches must be the same at every epoch. Counting them costs one pass over the
    iterable at construction when it has no ``len``; batch scores are the batch numbers.
    """

    def __init__(self, name: str, source: Iterable[Batch]):
        if iter(source) is source:
            raise ConfigError(f"probe {name!r}: a one-shot iterator cannot be read at every epoch; "
                              f"pass a list or a DataLoader (shuffle=False)")
        sampler = getattr(source, "sampler", None)
        if isinstance(sampler, torch.utils.data.RandomSampler):
            raise ConfigError(f"probe {name!r}: its DataLoader shuffles, so its batches change every epoch; "
                              f"use shuffle=False (a probe order must be fixed)")
        self.source = source
        first = next(iter(source), None)
        if first is None:
            raise ConfigError(f"probe {name!r} has no batches")
        self.batch_size = len(first[1])
        self.num_batches = len(source) if hasattr(source, "__len__") else sum(1 for _ in source)  # type: ignore[arg-type]
        self.index = np.zeros(0, dtype=np.int64)
        self.batch_score = np.arange(self.num_batches, dtype=np.float64)
        self.score_label = "batch number"

    def batches(self, ks: Sequence[int] | None = None) -> Iterator[Batch]:
        want = None if ks is None else set(ks)
        for k, (x, y) in enumerate(self.source):
            if want is None or k in want:
                yield x, y


def as_probe(name: str, source: Iterable[Batch] | ProbeBatches) -> ProbeBatches:
    return source if isinstance(source, ProbeBatches) else IterableProbe(name, source)
