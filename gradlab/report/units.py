"""The common unit of closeness: the random control's mean D at the same epoch and θ_e.

Every probe's D[e, k] is divided by the mean over batches of the ``random`` probe's D at the
same epoch e (the same θ_e and the same ∇_e), so a value below 1 reads "closer to the full
gradient than a typical random batch", and two probes' numbers are comparable. The
within-order unit (D divided by the probe's own epoch mean) hides a probe whose batches are
all far: its best bin can still sit below 1.

A run with ``random@class`` (class-stratified random batches, ``track.batching`` with
``class``) has a second control: every function here takes ``control=``, and ``controls``
lists the controls a run has, so that every probe can be given in both units.
"""
from __future__ import annotations

import numpy as np

from gradlab.registry import CLASS_CONTROL, RANDOM
from gradlab.runfile.reader import Run

CONTROL = RANDOM  # the control probe (gradlab.registry)
CONTROLS = (CONTROL, CLASS_CONTROL)  # random, and random@class: class-stratified random batches


def has_control(run: Run, measure: str = "l2", control: str = CONTROL) -> bool:
    return control in run.probes and measure in run.measures(control)


def controls(run: Run, measure: str = "l2") -> list[str]:
    """The controls ``run`` has (``random``, ``random@class``), in that order."""
    return [c for c in CONTROLS if has_control(run, measure, c)]


def random_unit(run: Run, measure: str = "l2", control: str = CONTROL) -> np.ndarray:
    """``[E]``: the control's mean D over its batches at each committed epoch (NaN where 0)."""
    if not has_control(run, measure, control):
        raise KeyError(f"{run.path} has no {control!r} probe with measure {measure!r}; "
                       f"it is the unit of closeness (add it to track.probes)")
    mean = run.distance_matrix(control, measure).astype(np.float64).mean(axis=1)
    return np.where(mean > 0, mean, np.nan)


def in_random_units(run: Run, probe: str, measure: str = "l2", control: str = CONTROL,
                    matrix: np.ndarray | None = None) -> np.ndarray:
    """``[E, K]``: the probe's D divided by the control's mean D of the same epoch."""
    d = run.distance_matrix(probe, measure) if matrix is None else matrix
    return d.astype(np.float64) / random_unit(run, measure, control)[: len(d), None]


def in_own_units(matrix: np.ndarray) -> np.ndarray:
    """``[E, K]``: D divided by the probe's own mean over batches of each epoch (within-order view)."""
    d = matrix.astype(np.float64)
    mean = d.mean(axis=1, keepdims=True)
    return d / np.where(mean > 0, mean, np.nan)
