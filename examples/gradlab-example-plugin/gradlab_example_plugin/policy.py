"""A training policy: the mirror of gradlab's ``high_first`` (R2)."""
from __future__ import annotations

import numpy as np
import torch


def low_first(cut, phase: int, gen: torch.Generator) -> torch.Tensor | None:
    """Phase 0 on the lower half of the cut's batches by mean metric, in a random order drawn from
    ``gen``; later phases return None (the runner's usual shuffle of every image). ``cut`` is a
    ``gradlab.train.policy.PolicyInput``."""
    if phase > 0:
        return None
    rows = np.argsort(cut.batch_score, kind="stable")[: max(1, len(cut.batch_score) // 2)]
    rows = rows[torch.randperm(len(rows), generator=gen).numpy()]
    return torch.from_numpy(np.ascontiguousarray(cut.batches[rows]).reshape(-1))
