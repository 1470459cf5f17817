"""Colour (paper section 3.2.2): the image's mean RGB colour converted to HSV.

Sort key: (hue, saturation, value), lexicographic, ascending. Hue is in degrees in
[0, 360), with 0 = red, then yellow (60), green (120), cyan (180), blue (240), magenta
(300). Hue is circular; we cut the circle at red (hue 0), as ``colorsys`` does, so the
order runs red -> yellow -> ... -> magenta and the batches at both ends are reddish.
Within a sorted batch hues are contiguous on that cut line, so the batch score (the
arithmetic mean hue of the batch) is well defined; it is not a circular mean across the
cut. Grey images (max = min channel) have no hue: like ``colorsys`` they get hue 0 and
saturation 0, so they come first, ordered by brightness (value). As in ``colorsys``, a
hue a rounding error below 0 wraps to exactly 360 (red again, at the end of the line).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from gradlab.metrics.base import Metric


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """Vectorised ``colorsys.rgb_to_hsv`` on ``[N, 3]`` floats in [0, 1]; hue as a fraction of a turn."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    maxc = rgb.max(1)
    minc = rgb.min(1)
    rangec = maxc - minc
    grey = rangec == 0
    safe_range = np.where(grey, 1.0, rangec)
    s = np.where(grey, 0.0, rangec / np.where(maxc == 0, 1.0, maxc))
    rc, gc, bc = (maxc - r) / safe_range, (maxc - g) / safe_range, (maxc - b) / safe_range
    h = np.where(r == maxc, bc - gc, np.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    h = np.where(grey, 0.0, (h / 6.0) % 1.0)
    return np.stack([h, s, maxc], 1)


class HSV(Metric):
    name = "hsv"
    label = "hue of the mean colour (degrees, 0 = red)"

    def compute(self, images: torch.Tensor, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """``float64 [N, 3]``: hue (degrees), saturation and value (both in [0, 1]) of the mean colour."""
        n, _, h, w = images.shape
        # Exact integer channel sums (at most 32*32*255 per channel), then one division.
        sums = images.cpu().numpy().reshape(n, 3, h * w).sum(2, dtype=np.int64)
        hsv = rgb_to_hsv(sums / (h * w * 255.0))
        hsv[:, 0] *= 360.0
        if progress:
            progress(n)
        return hsv
