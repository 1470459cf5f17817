"""Registry of per-image heuristic metrics (one class per file)."""
from __future__ import annotations

import difflib

from ..errors import ConfigError
from .base import Metric
from .intensity import Intensity

METRICS: dict[str, type[Metric]] = {m.name: m for m in (Intensity,)}


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        hint = difflib.get_close_matches(name, METRICS, n=1)
        extra = f' (did you mean "{hint[0]}"?)' if hint else ""
        raise ConfigError(f'unknown metric "{name}"{extra}; choose one of {", ".join(METRICS)}, or "random"')
    return METRICS[name]()


__all__ = ["METRICS", "Metric", "get_metric"]
