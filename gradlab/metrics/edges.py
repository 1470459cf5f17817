"""Edges (paper section 3.2.3): the number of Canny edge pixels of the grayscale image.

scikit-image ``feature.canny`` with its defaults (sigma = 1, low/high thresholds 0.1/0.2 of
the gradient magnitude) on ``color.rgb2gray`` of each image. Canny is a per-image C/Python
routine (about 0.5 ms for 32x32), so large sets are split into chunks scored in a process
pool, one worker per available core.
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import numpy as np
import torch

from gradlab.metrics.base import Metric

PARALLEL_MIN = 4000  # below this many images a pool costs more than it saves
CHUNK = 2500  # images per pool task: small enough for a smooth progress bar


def canny_counts(images_nhwc: np.ndarray) -> np.ndarray:
    """Edge-pixel counts of ``uint8 [N, H, W, 3]`` images, one at a time (the worker routine)."""
    from skimage import color, feature

    out = np.empty(len(images_nhwc), dtype=np.float64)
    for i, im in enumerate(images_nhwc):
        out[i] = np.count_nonzero(feature.canny(color.rgb2gray(im)))
    return out


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Edges(Metric):
    name = "edges"
    label = "Canny edge pixels"

    def __init__(self, workers: int | None = None):
        self.workers = workers  # None = one per available core

    def compute(self, images: torch.Tensor, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """``float64 [N]``: Canny edge-pixel count of each image."""
        nhwc = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())
        workers = self.workers or _workers()
        chunks = [nhwc[s:s + CHUNK] for s in range(0, len(nhwc), CHUNK)]
        parallel = workers > 1 and len(nhwc) >= PARALLEL_MIN
        if parallel:
            import multiprocessing as mp

            # forkserver/spawn would re-import torch in each worker (seconds); fork is cheap and
            # safe here because the workers only run numpy/scikit-image.
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        parts = []
        with ProcessPoolExecutor(workers, mp_context=ctx) if parallel else contextlib.nullcontext() as pool:
            for c, part in zip(chunks, pool.map(canny_counts, chunks) if parallel else map(canny_counts, chunks)):
                parts.append(part)
                if progress:
                    progress(len(c))
        return np.concatenate(parts) if parts else np.zeros(0)
