"""Per-image heuristic metrics (one class per file; the names are in ``gradlab.registry.METRICS``).

``intensity``, ``hsv``, ``edges`` and ``lpips`` are the four metrics of *Finding the best
mini-batch* section 3.2; the order ``random`` (see ``gradlab.data.orders``) is the control.
A new metric is a ``Metric`` subclass in its own file and one ``Entry`` in the registry; a
user's metric outside gradlab is named by a plugin (entry-point group ``gradlab.plugins``) or by
its import path ``"package.module:Name"``.
"""
from __future__ import annotations

from gradlab import registry
from gradlab.metrics.base import Metric, score_images


def get_metric(name: str) -> Metric:
    """A fresh instance of metric ``name``: gradlab's, a plugin's or an import path (imported now).
    Its ``name`` is the one it was asked by, so that caches and run files key it by that name.

        >>> get_metric("intensity").label
        'intensity (sum of pixel values, 0-255 scale)'
    """
    m = registry.METRICS.load(name)()
    if m.name != name:
        m.name = name
    return m


__all__ = ["Metric", "get_metric", "score_images"]
