"""Image intensity (paper section 3.2.1): the sum of all channels at all pixels."""
from __future__ import annotations

import numpy as np
import torch

from .base import Metric


class Intensity(Metric):
    name = "intensity"
    label = "intensity (sum of pixel values, 0-255 scale)"

    def compute(self, images: torch.Tensor) -> np.ndarray:
        # int64 sums are exact: at most 3*32*32*255 = 783,360 per CIFAR image.
        return images.reshape(images.shape[0], -1).sum(1, dtype=torch.int64).numpy().astype(np.float64)
