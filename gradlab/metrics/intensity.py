"""Image intensity (paper section 3.2.1): the sum of all channels at all pixels."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from gradlab.metrics.base import Metric


class Intensity(Metric):
    name = "intensity"
    label = "intensity (sum of pixel values, 0-255 scale)"

    def compute(self, images: torch.Tensor, progress: Callable[[int], None] | None = None) -> np.ndarray:
        # Exact int64 sums (at most 3*32*32*255 = 783,360 per CIFAR image). numpy's buffered
        # uint8 -> int64 reduction is ~10x faster than torch's here (0.1 s for 50,000 images).
        out = images.cpu().numpy().reshape(images.shape[0], -1).sum(1, dtype=np.int64).astype(np.float64)
        if progress:
            progress(len(out))
        return out
