"""A tracked quantity: D / |G|, batch k's distance in units of the probe's mean gradient norm."""
from __future__ import annotations

import numpy as np

from gradlab.quantities import FULL_SQ_NORM, SQ_DIST, Quantity


class DistanceOverFull(Quantity):
    """|g_k - G| / |G|. G is this probe pass's own mean gradient: for the ``random`` probe that is
    nabla_e, the full gradient; for a sorted probe with BatchNorm it is that probe's own mean."""

    name = "distance_over_full"
    units = "1"
    description = ("|g_k - G| / |G|: batch k's distance to G, this probe pass's own mean gradient, in units of |G| "
                   "(G = nabla_e for the random probe).")
    needs = (SQ_DIST, FULL_SQ_NORM)

    def compute(self, r):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(r[SQ_DIST] / r[FULL_SQ_NORM])
