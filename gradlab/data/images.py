"""``ImageSet``: the images and labels of one split, as every dataset loader returns them.

Its own module, below the loaders (``gradlab.data.datasets``, ``segmentation``, ``userdata``),
so that each of them imports it without importing the others.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gradlab.data.inputs import NORMALISE, ItemInputs, Preprocessing
from gradlab.errors import DatasetError

# Per-channel mean/std of the CIFAR-10 training set (fraction of 255): the normalisation of
# cifar10, cifar10-sample, synthetic, the segmentation sets and user data; mnist and
# animal-mnist carry their own (gradlab.data.real).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


@dataclass
class ImageSet:
    """Images and labels of one split."""

    name: str
    # uint8 [N, 3, H, W]: the raw pixels the metrics score; None for a dataset of float tensors that are
    # not raw pixels (already normalised), which only orders without a metric can use
    images: torch.Tensor | None
    labels: torch.Tensor  # int64 [N]; for segmentation sets uint8 masks [N, H, W] (gradlab.data.segmentation)
    classes: tuple[str, ...]
    # per-channel normalisation of this data (fraction of 255): the built-in dataset's constants, or those
    # measured on the user's images (gradlab.data.inputs.channel_stats); used when ``inputs`` is None
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    # the model's inputs read per image from the user's dataset (their transform, or float tensors as
    # given); None: the normalised images above (gradlab.data.inputs)
    inputs: ItemInputs | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int) -> "ImageSet":
        """The first ``n`` images (all when n is 0 or larger than the set)."""
        if n <= 0 or n >= len(self):
            return self
        images = self.images[:n] if self.images is not None else None
        return ImageSet(self.name, images, self.labels[:n], self.classes, self.mean, self.std, self.inputs)

    def preprocessing(self) -> Preprocessing:
        """How this set's model inputs are made (recorded in every probe group of it)."""
        if self.inputs is not None:
            return self.inputs.preprocessing()
        return Preprocessing(NORMALISE, mean=tuple(map(float, self.mean)), std=tuple(map(float, self.std)))

    def pixels(self, why: str) -> torch.Tensor:
        """The raw uint8 images, or one ``DatasetError`` saying why they are needed and what to pass."""
        if self.images is None:
            raise DatasetError(f"dataset {self.name!r} yields float tensors that are not raw pixels (outside [0, 1], "
                               f"e.g. after Normalize()), and {why} needs raw pixels; pass the raw dataset (PIL images "
                               f"or uint8 tensors) with your preprocessing as transform= (data.transform in a study "
                               f"file), or use the random order")
        return self.images
