"""Model registry: ``model.name`` -> constructor taking the ``ModelConfig``."""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from .dpn import DPN, DPN26, DPN92
from .resnet import ResNet18
from .small import SmallCNN

MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "smallcnn": lambda c: SmallCNN(c.num_classes, c.norm),
    "resnet18": lambda c: ResNet18(c.num_classes, c.norm),
    "dpn26": lambda c: DPN(DPN26, c.num_classes, c.norm),
    "dpn92": lambda c: DPN(DPN92, c.num_classes, c.norm),
}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate ``cfg.name``; weights come from the global torch RNG (seed it first)."""
    if cfg.name not in MODELS:
        import difflib

        hint = difflib.get_close_matches(cfg.name, MODELS, n=1)
        extra = f' (did you mean "{hint[0]}"?)' if hint else ""
        raise ConfigError(f'unknown model.name "{cfg.name}"{extra}; choose one of {", ".join(MODELS)}')
    return MODELS[cfg.name](cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
