"""Image intensity (paper section 3.2.1): the sum of all channels at all pixels."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .base import Metric


class Intensity(Metric):
    name = "intensity"
    label = "intensity (sum of pixel values, 0-255 scale)"

    def compute(self, images: torch.Tensor, progress: Callable[[int], None] | None = None) -> np.ndarray:
        # int64 sums are exact: at most 3*32*32*255 = 783,360 per CIFAR image.
        out = images.reshape(images.shape[0], -1).sum(1, dtype=torch.int64).numpy().astype(np.float64)
        if progress:
            progress(len(out))
        return out
