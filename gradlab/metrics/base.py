"""Base class of the per-image heuristic metrics that order a dataset into batches."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


class Metric:
    """One per-image score.

    ``compute`` maps ``uint8 [N, 3, H, W]`` images to ``float64 [N]`` scores, or to
    ``[N, C]`` for a lexicographic key (column 0 first). Batches are formed by sorting
    ascending on the key; column 0 is the value shown for a batch (its mean).
    """

    name: str = ""
    label: str = ""  # axis title for the batch score
    version: int = 1  # bump when the computation changes: invalidates cached scores

    @property
    def variant(self) -> str:
        """Extra cache-key text for inputs outside the images (e.g. which weights); "" for none."""
        return ""

    def compute(self, images: torch.Tensor, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Scores of ``images``; ``progress(n)`` is called as each n images are done."""
        raise NotImplementedError

    def sort(self, scores: np.ndarray) -> np.ndarray:
        """Stable ascending order of images by their key."""
        if scores.ndim == 1:
            return np.argsort(scores, kind="stable")
        return np.lexsort(scores.T[::-1])  # lexsort sorts by the last key first

    def primary(self, scores: np.ndarray) -> np.ndarray:
        """The scalar per image used for batch scores."""
        return scores if scores.ndim == 1 else scores[:, 0]
