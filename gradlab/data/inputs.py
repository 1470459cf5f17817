"""How the model's input tensors are made from a dataset's images, and what the run file says about it.

Four ways, one per input route (recorded in each probe group as ``preprocessing``):

- ``normalise``: gradlab's own, for raw images (PIL, uint8) without a transform: ``uint8 / 255``,
  minus the per-channel mean, over the std (``ImageSet.mean``/``std``: the built-in dataset's
  constants, or those measured on the user's own images by ``channel_stats``);
- ``transform``: the user's ``transform`` applied to each raw image, exactly as their training
  loop does, collated like a ``DataLoader`` (``ItemInputs``);
- ``as given``: a dataset whose items are already float tensors (``ToTensor()``,
  ``Normalize()``): the items themselves, collated, never clipped or rescaled;
- ``user batches``: the user's own ``(x, y)`` batches, as given (``IterableProbe``).

Image metrics always score the raw pixels (``ImageSet.images``), never these tensors.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from gradlab.errors import DatasetError

NORMALISE, TRANSFORM, AS_GIVEN, USER_BATCHES = "normalise", "transform", "as given", "user batches"


@dataclass(frozen=True)
class Preprocessing:
    """What made a probe's input tensors: ``kind`` (one of the four above), the transform's
    ``repr`` (kind ``transform``), the normalisation constants (kind ``normalise``, fraction of 255)."""

    kind: str
    transform: str = ""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and population std of uint8 ``[N, 3, H, W]`` images, as fractions of 255,
    from exact integer sums (the same numbers on every machine)."""
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean, std = [], []
    for c in range(images.shape[1]):
        s1 = s2 = 0
        for lo in range(0, images.shape[0], 4096):  # int64 sums of a chunk: exact, bounded memory
            x = images[lo:lo + 4096, c].to(torch.int64)
            s1 += int(x.sum())
            s2 += int((x * x).sum())
        m = s1 / n
        mean.append(m / 255)
        std.append(max(s2 / n - m * m, 0.0) ** 0.5 / 255)
    return tuple(mean), tuple(std)  # type: ignore[return-value]


class _Rng:
    """Every global RNG a transform might draw from, restored after the block: checking a user's
    transform must not move the training's random streams."""

    def __enter__(self) -> None:
        self.state = (torch.get_rng_state(), random.getstate(), np.random.get_state())

    def __exit__(self, *exc: object) -> None:
        torch.set_rng_state(self.state[0])
        random.setstate(self.state[1])
        np.random.set_state(self.state[2])


class ItemInputs:
    """Model inputs read per image from the user's dataset: ``transform(dataset[i][0])``, or the
    item ``dataset[i][0]`` itself (``transform=None``: a dataset of float tensors, as given),
    collated with ``torch.utils.data.default_collate``, as a ``DataLoader`` batches them.

    Checked at construction, in one line each: the input of image 0 must be a tensor, and two
    reads of it must be equal (a random transform would change the probe batches every epoch).
    """

    def __init__(self, dataset: Any, transform: Callable[[Any], Any] | None, name: str):
        self.dataset, self.transform, self.name = dataset, transform, name
        with _Rng():
            a, b = self.one(0), self.one(0)
        what = f"transform={transform!r}" if transform is not None else f"dataset {name!r}"
        if not torch.is_tensor(a):
            raise DatasetError(f"{what} gives a {type(a).__name__} for image 0, not a tensor; end the transform "
                               f"with ToTensor() (or return a tensor)")
        if a.shape != b.shape or not torch.equal(a, b):
            raise DatasetError(f"{what} gives a different tensor each time it reads image 0 (a random transform?); "
                               f"probe batches must be the same every epoch: pass the deterministic part only "
                               f"(no random crops or flips)")
        self.shape = tuple(a.shape)

    def one(self, i: int) -> Any:
        raw = self.dataset[i][0]
        return raw if self.transform is None else self.transform(raw)

    def __call__(self, idx: Sequence[int]) -> torch.Tensor:
        from torch.utils.data import default_collate

        items = [self.one(int(i)) for i in idx]
        for i, t in zip(idx, items):
            if not torch.is_tensor(t) or tuple(t.shape) != self.shape:
                got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
                raise DatasetError(f"dataset {self.name!r}: the input of image {int(i)} is {got}, image 0's is "
                                   f"{self.shape}; the inputs of one probe batch must have one shape")
        return default_collate(items)

    def preprocessing(self) -> Preprocessing:
        if self.transform is None:
            return Preprocessing(AS_GIVEN)
        return Preprocessing(TRANSFORM, transform=repr(self.transform))
