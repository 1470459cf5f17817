"""Reading the committed run files and per-seed values, shared by the results pages."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gradlab.report.summary import phase_profile
from gradlab.results.catalog import Study
from gradlab.runfile.reader import Run


def open_study(study: Study, root: Path, variants: tuple[str, ...] | None = None) -> dict[tuple[str, int], Run]:
    """Every run file of ``study`` (or of ``variants``), keyed by (variant, seed), in catalog order."""
    out: dict[tuple[str, int], Run] = {}
    for v in variants or study.variants:
        for seed, p in zip(study.seeds, study.paths(root, v)):
            out[(v, seed)] = Run(p)
    return out


def by_variant(runs: dict[tuple[str, int], Run], variant: str) -> list[Run]:
    return [r for (v, _), r in runs.items() if v == variant]


def seed_means(runs: list[Run], probe: str, phase: int, unit: str, measure: str = "l2", target: str = "own"
               ) -> np.ndarray:
    """``[S]``: each seed's mean D of ``probe`` over the phase's epochs and batches, in ``unit``'s
    mean D at the same epoch (``gradlab.report.units``). ``target="common"``: D to the common
    target (the random probe's full gradient, ``Run.distance_matrix``), in the same unit."""
    return np.array([np.nanmean(phase_profile(r, probe, phase, measure, unit=unit,
                                              matrix=None if target == "own" else
                                              r.distance_matrix(probe, measure, target))) for r in runs])


def final(runs: list[Run], column: str) -> np.ndarray:
    """``[S]``: each seed's value of an epoch column (``test_acc``, ``test_miou``) after the last epoch."""
    return np.array([float(r.train_curves()[column].iloc[-1]) for r in runs])


def curve(runs: list[Run], column: str) -> np.ndarray:
    """``[S, E]``: each seed's epoch column after every epoch."""
    return np.stack([r.train_curves()[column].to_numpy(dtype=np.float64) for r in runs])
