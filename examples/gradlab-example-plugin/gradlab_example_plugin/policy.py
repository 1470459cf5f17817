"""A training policy: the mirror of gradlab's ``high_first`` (R2)."""
from __future__ import annotations

import numpy as np
import torch


def low_first(batches: np.ndarray, batch_score: np.ndarray, phase: int, gen: torch.Generator) -> torch.Tensor | None:
    """Phase 0 on the lower half of the cut's batches by mean metric, in a random order drawn from
    ``gen``; later phases return None (the runner's usual shuffle of every image)."""
    if phase > 0:
        return None
    rows = np.argsort(batch_score, kind="stable")[: max(1, len(batches) // 2)]
    rows = rows[torch.randperm(len(rows), generator=gen).numpy()]
    return torch.from_numpy(np.ascontiguousarray(batches[rows]).reshape(-1))
