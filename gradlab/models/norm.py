"""Normalisation layer factory: every model asks here for its norm layers.

``model.norm`` picks the kind: ``bn`` (BatchNorm2d), ``agc`` (automatic gain control,
``gradlab.models.agc``) or ``none``. New kinds register in ``NORMS``.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from gradlab.errors import ConfigError
from gradlab.models.agc import AGC

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "bn": nn.BatchNorm2d,
    "agc": AGC,
    "none": lambda channels: nn.Identity(),
}


def make_norm(kind: str, channels: int) -> nn.Module:
    """A 2-d normalisation layer of ``kind`` over ``channels`` channels."""
    try:
        return NORMS[kind](channels)
    except KeyError:
        raise ConfigError(f'unknown model.norm "{kind}"; choose one of {", ".join(NORMS)}') from None
