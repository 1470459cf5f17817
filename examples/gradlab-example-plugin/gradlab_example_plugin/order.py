"""A gradient order: images by their loss at theta_e, highest first."""
from __future__ import annotations

from gradlab.track.gradorders import GradientOrder


class LossDescending(GradientOrder):
    """The ``loss`` order reversed: batch 0 holds the images with the highest loss at theta_e."""

    name = "loss_desc"
    label = "minus the loss at theta_e (eval mode)"

    def key(self, s, full_norm):
        return -s.loss  # sorted ascending, so the highest loss comes first
