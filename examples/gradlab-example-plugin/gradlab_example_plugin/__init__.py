"""gradlab-example-plugin: what an installed package adds to gradlab (``entries``).

Each name points at its implementation by import path; gradlab imports an implementation only
when a run uses it, so this module stays as light as ``gradlab.registry`` (no torch).
"""
from __future__ import annotations

from gradlab.registry import Entry, entry


def entries() -> dict[str, list[Entry]]:
    """The names this plugin adds, by concept (the ``gradlab.plugins`` entry point)."""
    return {
        "metric": [entry("contrast", "gradlab_example_plugin.metric:Contrast", "RMS contrast of the grey levels")],
        "gradient order": [entry("loss_desc", "gradlab_example_plugin.order:LossDescending",
                                 "the image's loss at theta_e, highest first")],
        "quantity": [entry("distance_over_full", "gradlab_example_plugin.quantity:DistanceOverFull",
                           "D / |G|: batch k's distance in units of the probe's mean gradient norm")],
        "training policy": [entry("low_first", "gradlab_example_plugin.policy:low_first",
                                  "phase 0 on the lower half of the cut's batches by mean metric, then shuffle")],
    }
