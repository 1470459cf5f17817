"""Base class of the per-image heuristic metrics that order a dataset into batches."""
from __future__ import annotations

import inspect
from typing import Callable

import numpy as np
import torch


class Metric:
    """One per-image score: subclass it and define ``compute``.

    ``compute(images)`` maps ``uint8 [N, 3, H, W]`` images (greyscale data arrives as three
    equal channels) to ``float64 [N]`` scores, or to ``[N, C]`` for a lexicographic key
    (column 0 first). It may also take ``progress``, a callable to call with the number of
    images done (for the progress bar of ``gradlab scores``); without it the whole batch
    counts at once. Batches are formed by sorting ascending on the key; column 0 is the
    value shown for a batch (its mean). ``label`` is the axis title of that value;
    ``version`` names the computation in the score cache (bump it when the computation
    changes, so cached scores are recomputed).

        >>> import torch
        >>> class Contrast(Metric):
        ...     name, label = "contrast", "RMS contrast (grey levels)"
        ...     def compute(self, images):
        ...         return images.reshape(len(images), -1).double().std(dim=1).numpy()
        >>> images = torch.tensor([[[[0, 0], [0, 0]]] * 3, [[[0, 255], [255, 0]]] * 3], dtype=torch.uint8)
        >>> scores = score_images(Contrast(), images)
        >>> scores.round(1).tolist(), Contrast().sort(scores).tolist()
        ([0.0, 133.2], [0, 1])
    """

    concept = "metric"  # what an import path must name (gradlab.registry.METRICS)
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


def score_images(metric: Metric, images: torch.Tensor, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """``metric.compute(images)``, passing ``progress`` only to a ``compute`` that takes it (a metric
    written as ``compute(self, images)`` is valid); the scores as a float64 array."""
    params = inspect.signature(metric.compute).parameters
    takes = "progress" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    out = metric.compute(images, progress=progress) if takes else metric.compute(images)
    if progress is not None and not takes:
        progress(len(images))
    return np.asarray(out, dtype=np.float64)
