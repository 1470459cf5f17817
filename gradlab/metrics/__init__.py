"""Per-image heuristic metrics (one class per file; the names are in ``gradlab.registry.METRICS``).

``intensity``, ``hsv``, ``edges`` and ``lpips`` are the four metrics of *Finding the best
mini-batch* section 3.2; the order ``random`` (see ``gradlab.data.orders``) is the control.
A new metric is a ``Metric`` subclass in its own file and one ``Entry`` in the registry.
"""
from __future__ import annotations

from gradlab import registry
from gradlab.metrics.base import Metric


def get_metric(name: str) -> Metric:
    """A fresh instance of metric ``name`` (its module is imported now)."""
    return registry.METRICS.load(name)()


__all__ = ["Metric", "get_metric"]
