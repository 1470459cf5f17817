"""Model registry: ``model.name`` -> constructor taking the ``ModelConfig``."""
from __future__ import annotations

from typing import Callable

from torch import nn

from gradlab.config import ModelConfig
from gradlab.errors import ConfigError, did_you_mean
from gradlab.models.dpn import DPN, DPN26, DPN92
from gradlab.models.resnet import ResNet18
from gradlab.models.resunet import ResUNet
from gradlab.models.small import SmallCNN
from gradlab.usercode import call_user, is_import_path

MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "smallcnn": lambda c: SmallCNN(c.num_classes, c.norm),
    "resnet18": lambda c: ResNet18(c.num_classes, c.norm),
    "dpn26": lambda c: DPN(DPN26, c.num_classes, c.norm, c.series_weight, c.parallel_weight),
    "dpn92": lambda c: DPN(DPN92, c.num_classes, c.norm, c.series_weight, c.parallel_weight),
    "resunet": lambda c: ResUNet(c.num_classes, c.norm, c.width, 3, c.series_weight, c.parallel_weight),
}

# Models with series-connection concatenations, where model.series_weight / parallel_weight act.
WEIGHTED_CONCAT = frozenset({"dpn26", "dpn92", "resunet"})
# Models whose output is per pixel [B, C, H, W]; they need a segmentation dataset.
SEGMENTATION_MODELS = frozenset({"resunet"})


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate ``cfg.name``, a built-in name or an import path ``"pkg.mod:factory"`` to a
    callable taking the ``ModelConfig``; weights come from the global torch RNG (seed it first)."""
    if is_import_path(cfg.name):
        model = call_user(cfg.name, "model.name", cfg)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model.name = {cfg.name!r} returned a {type(model).__name__}, not a torch.nn.Module")
        return model
    if cfg.name not in MODELS:
        raise ConfigError(f'unknown model.name "{cfg.name}"{did_you_mean(cfg.name, MODELS)}; choose one of '
                          f'{", ".join(MODELS)}, or an import path "package.module:factory"')
    if cfg.name not in WEIGHTED_CONCAT and (cfg.series_weight != 1.0 or cfg.parallel_weight != 1.0):
        raise ConfigError(f"model.series_weight / model.parallel_weight act on concatenations, which {cfg.name} has "
                          f"none of; use one of {', '.join(sorted(WEIGHTED_CONCAT))} or leave both at 1")
    if cfg.width < 1:
        raise ConfigError(f"model.width must be >= 1, got {cfg.width}")
    return MODELS[cfg.name](cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
