"""CPU-friendly networks for tests and CPU studies."""
from __future__ import annotations

import torch
from torch import nn

from gradlab.models.norm import make_norm


class SmallCNN(nn.Module):
    """Three 3x3 conv stages (32, 64, 128 channels) + linear head: 94.5k parameters.

    Trains at ~1-2k img/s on 2 CPU threads at 32x32. With ``norm="none"`` it has no
    batch statistics, so a batch gradient is a plain mean of per-sample gradients.
    """

    def __init__(self, num_classes: int = 10, norm: str = "bn"):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate((32, 64, 128)):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=norm == "none"), make_norm(norm, c), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2) if i < 2 else nn.AdaptiveAvgPool2d(1))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def build(c) -> SmallCNN:
    """``model.name = "smallcnn"`` (``c``: the ``ModelConfig``)."""
    return SmallCNN(c.num_classes, c.norm)
