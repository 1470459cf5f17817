"""Dual Path Networks for 32x32 inputs, in the kuangliu/pytorch-cifar configuration.

Each bottleneck emits ``out_planes + dense_depth`` channels. The first ``out_planes`` are the
residual path (added to the input's), the rest are dense-path features appended to the
input's carried dense features. With the configurations below DPN-92 has exactly
34,236,634 parameters and DPN-26 11,574,842.

Weight mechanism (Qi & Zhao, *Weight mechanism: adding a constant in concatenation of
series connect*): every block ends in the concatenation
``cat([x_res + out_res, α · x_dense, β · out_dense])`` (``Bottleneck.merge``), where

- ``x_dense = x[:, out_planes:]`` are the dense-path features the block *receives* (after
  the projection shortcut in a stage's first block). The block's new features are computed
  from them, so this is the paper's series connection, Fig. 1(a): α (``model.series_weight``)
  multiplies the earlier features X1.
- ``out_dense = out[:, out_planes:]`` are the block's new dense features X2. Weighting X2
  instead of X1 is the paper's parallel position (Fig. 1 caption): β (``model.parallel_weight``).
- The residual sum on the first ``out_planes`` channels is left alone (the paper's Fig. 1(c)
  adding path is not part of the mechanism).

One α and one β are shared by every block. At α = β = 1 no multiplication is done, so the
network is bit-identical to the plain DPN.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.models.mechanism import scaled
from gradlab.models.norm import make_norm


@dataclass(frozen=True)
class DPNSpec:
    in_planes: tuple[int, int, int, int]  # bottleneck width per stage (grouped conv, 32 groups)
    out_planes: tuple[int, int, int, int]  # residual-path channels per stage
    num_blocks: tuple[int, int, int, int]
    dense_depth: tuple[int, int, int, int]  # dense channels added by each block


DPN26 = DPNSpec((96, 192, 384, 768), (256, 512, 1024, 2048), (2, 2, 2, 2), (16, 32, 24, 128))
DPN92 = DPNSpec((96, 192, 384, 768), (256, 512, 1024, 2048), (3, 4, 20, 3), (16, 32, 24, 128))


class Bottleneck(nn.Module):
    def __init__(self, last_planes: int, in_planes: int, out_planes: int, dense_depth: int,
                 stride: int, first_layer: bool, norm: str, series_weight: float = 1.0,
                 parallel_weight: float = 1.0):
        super().__init__()
        self.series_weight = series_weight
        self.parallel_weight = parallel_weight
        self.out_planes = out_planes
        self.dense_depth = dense_depth
        self.conv1 = nn.Conv2d(last_planes, in_planes, 1, bias=False)
        self.bn1 = make_norm(norm, in_planes)
        self.conv2 = nn.Conv2d(in_planes, in_planes, 3, stride, 1, groups=32, bias=False)
        self.bn2 = make_norm(norm, in_planes)
        self.conv3 = nn.Conv2d(in_planes, out_planes + dense_depth, 1, bias=False)
        self.bn3 = make_norm(norm, out_planes + dense_depth)
        self.shortcut = nn.Sequential()
        if first_layer:
            self.shortcut = nn.Sequential(
                nn.Conv2d(last_planes, out_planes + dense_depth, 1, stride, bias=False),
                make_norm(norm, out_planes + dense_depth),
            )

    def merge(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Dual-path join: residual sum on the first ``out_planes`` channels, then the
        carried dense features of the input (x α, series), then this block's new dense
        features (x β, parallel position)."""
        d = self.out_planes
        return torch.cat([x[:, :d] + out[:, :d], scaled(x[:, d:], self.series_weight),
                          scaled(out[:, d:], self.parallel_weight)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(self.merge(self.shortcut(x), out))


class DPN(nn.Module):
    def __init__(self, spec: DPNSpec, num_classes: int = 10, norm: str = "bn", series_weight: float = 1.0,
                 parallel_weight: float = 1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = make_norm(norm, 64)
        last = 64
        stages = []
        for s in range(4):
            blocks = []
            for i in range(spec.num_blocks[s]):
                stride = (1 if s == 0 else 2) if i == 0 else 1
                blocks.append(Bottleneck(last, spec.in_planes[s], spec.out_planes[s], spec.dense_depth[s],
                                         stride, i == 0, norm, series_weight, parallel_weight))
                last = spec.out_planes[s] + (i + 2) * spec.dense_depth[s]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4).flatten(1)
        return self.linear(out)


def build_dpn26(c) -> DPN:
    """``model.name = "dpn26"`` (``c``: the ``ModelConfig``)."""
    return DPN(DPN26, c.num_classes, c.norm, c.series_weight, c.parallel_weight)


def build_dpn92(c) -> DPN:
    """``model.name = "dpn92"``, the paper's network (``c``: the ``ModelConfig``)."""
    return DPN(DPN92, c.num_classes, c.norm, c.series_weight, c.parallel_weight)
