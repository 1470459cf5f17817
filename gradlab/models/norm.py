"""Normalisation layer factory: every model asks here for its norm layers.

``model.norm`` picks the kind. New kinds (AGC) register in ``NORMS``.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import ConfigError

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "bn": nn.BatchNorm2d,
    "none": lambda channels: nn.Identity(),
}


def make_norm(kind: str, channels: int) -> nn.Module:
    """A 2-d normalisation layer of ``kind`` over ``channels`` channels."""
    try:
        return NORMS[kind](channels)
    except KeyError:
        raise ConfigError(f'unknown model.norm "{kind}"; choose one of {", ".join(NORMS)}') from None
