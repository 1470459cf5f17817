"""Registry of per-image heuristic metrics (one class per file).

``intensity``, ``hsv``, ``edges`` and ``lpips`` are the four metrics of *Finding the best
mini-batch* section 3.2; the order ``random`` (see ``gradlab.data.orders``) is the control.
"""
from __future__ import annotations


from gradlab.config import METRIC_NAMES
from gradlab.errors import ConfigError, did_you_mean
from gradlab.metrics.base import Metric
from gradlab.metrics.edges import Edges
from gradlab.metrics.hsv import HSV
from gradlab.metrics.intensity import Intensity
from gradlab.metrics.lpips import LPIPS

METRICS: dict[str, type[Metric]] = {m.name: m for m in (Intensity, HSV, Edges, LPIPS)}
assert tuple(METRICS) == METRIC_NAMES, "gradlab.config.METRIC_NAMES and the metric registry disagree"


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise ConfigError(f'unknown metric "{name}"{did_you_mean(name, METRICS)}; choose one of {", ".join(METRICS)}')
    return METRICS[name]()


__all__ = ["METRICS", "Metric", "get_metric"]
