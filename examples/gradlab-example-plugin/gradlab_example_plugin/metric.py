"""An image metric: RMS contrast, the standard deviation of an image's grey levels."""
from __future__ import annotations

import numpy as np
import torch

from gradlab.metrics import Metric


class Contrast(Metric):
    """RMS contrast: the standard deviation of the grey level (mean of R, G, B) over the pixels."""

    name = "contrast"
    label = "RMS contrast (grey levels, 0-255)"
    version = 1  # bump when compute changes: cached scores are recomputed

    def compute(self, images: torch.Tensor) -> np.ndarray:
        grey = images.to(torch.float64).mean(dim=1)  # uint8 [N, 3, H, W] -> float64 [N, H, W]
        return grey.reshape(len(grey), -1).std(dim=1, correction=0).numpy()
