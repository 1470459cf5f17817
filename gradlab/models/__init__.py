"""Built-in networks, one file per model; ``model.name`` -> ``gradlab.registry.MODELS``."""
from __future__ import annotations

from torch import nn

from gradlab import registry
from gradlab.config import ModelConfig
from gradlab.errors import ConfigError
from gradlab.usercode import call_user, is_import_path

# Models with series-connection concatenations, where model.series_weight / parallel_weight act.
WEIGHTED_CONCAT = frozenset(registry.MODELS.having("weighted_concat"))
# Models whose output is per pixel [B, C, H, W]; they need a segmentation dataset.
SEGMENTATION_MODELS = frozenset(registry.MODELS.having("segmentation"))


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate ``cfg.name``, a built-in name or an import path ``"pkg.mod:factory"`` to a
    callable taking the ``ModelConfig``; weights come from the global torch RNG (seed it first)."""
    if is_import_path(cfg.name):
        model = call_user(cfg.name, "model.name", cfg)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model.name = {cfg.name!r} returned a {type(model).__name__}, not a torch.nn.Module")
        return model
    build = registry.MODELS.load(cfg.name)
    if cfg.name not in WEIGHTED_CONCAT and (cfg.series_weight != 1.0 or cfg.parallel_weight != 1.0):
        raise ConfigError(f"model.series_weight / model.parallel_weight act on concatenations, which {cfg.name} has "
                          f"none of; use one of {', '.join(sorted(WEIGHTED_CONCAT))} or leave both at 1")
    if cfg.width < 1:
        raise ConfigError(f"model.width must be >= 1, got {cfg.width}")
    return build(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
