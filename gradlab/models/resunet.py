"""Residual U-Net of *Weight mechanism* (Qi & Zhao), Fig. 2, for binary/multi-class segmentation.

Architecture (base width w = ``model.width``; level i has ``w·2^i`` channels):

    enc0 = Res(stem(x))                          H      w      ─┐ skip 1 (α1, β1)
    enc1 = Res(Down(enc0))                       H/2    2w     ─┤ skip 2 (α2, β2)
    enc2 = Res(Down(enc1))                       H/4    4w     ─┤ skip 3 (α3, β3)
    enc3 = Res(Down(enc2))                       H/8    8w     ─┤ skip 4 (α4, β4)
    mid  = Res(Down(enc3))                       H/16   16w     │
    dec_i = Res(cat(α_i · enc_{i-1}, β_i · up(dec_{i+1})))  for i = 4, 3, 2, 1
    logits = Conv1x1(dec_1)                      H      classes

- ``Res`` is the bottleneck residual block of He et al. (1x1 → 3x3 → 1x1, expansion 4,
  norm after every conv, projection shortcut when the width changes), as the paper states.
- ``Down`` is a stride-2 3x3 convolution + norm + ReLU (the paper replaces max pooling
  by stride-2 convolutions); ``up`` is bilinear interpolation (align_corners=False).
- α_i (``model.series_weight``) multiplies the encoder skip X1: the decoder input X2 is
  computed *from* that skip through the deeper path, so this is the series connection of
  Fig. 1(a). β_i (``model.parallel_weight``) multiplies the upsampled decoder features X2,
  the position the paper calls parallel (Fig. 1 caption). As in the paper's experiments one
  value is used for all four i. At α = β = 1 no multiplication is done, so the model is
  bit-identical to the plain residual U-Net.

The text of the paper does not carry Fig. 2's channel table; the widths above are ours.
At w = 32 the model has 2.34M parameters (the paper reports 5.11M), w = 16 has 0.59M and
w = 8 0.15M. Norm layers use PyTorch's initialisation (weight 1, bias 0), the setting of
the paper's Table II / Fig. 7.
Input height and width must be multiples of 16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.models.mechanism import scaled
from gradlab.models.norm import make_norm

DEPTH = 4  # downsamplings = concatenations


class ResBottleneck(nn.Module):
    """Bottleneck residual block ``c_in -> c_out`` at stride 1 (mid width c_out / 4)."""

    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__()
        mid = max(c_out // 4, 1)
        self.conv1 = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn1 = make_norm(norm, mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, mid)
        self.conv3 = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = make_norm(norm, c_out)
        self.shortcut = nn.Sequential()
        if c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), make_norm(norm, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class Down(nn.Module):
    """Stride-2 3x3 convolution + norm + ReLU: halves H and W, ``c_in -> c_out``."""

    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False)
        self.bn = make_norm(norm, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ResUNet(nn.Module):
    def __init__(self, num_classes: int = 2, norm: str = "bn", width: int = 32, in_channels: int = 3,
                 series_weight: float = 1.0, parallel_weight: float = 1.0):
        super().__init__()
        self.series_weight = series_weight
        self.parallel_weight = parallel_weight
        ch = [width * 2 ** i for i in range(DEPTH + 1)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False), make_norm(norm, ch[0]),
                                  nn.ReLU(inplace=True))
        self.enc = nn.ModuleList([ResBottleneck(ch[0], ch[0], norm)])
        self.down = nn.ModuleList()
        for i in range(1, DEPTH + 1):
            self.down.append(Down(ch[i - 1], ch[i], norm))
            self.enc.append(ResBottleneck(ch[i], ch[i], norm))
        # dec[j] joins skip level j (0..3) with the upsampled level j+1 output
        self.dec = nn.ModuleList([ResBottleneck(ch[j] + ch[j + 1], ch[j], norm) for j in range(DEPTH)])
        self.head = nn.Conv2d(ch[0], num_classes, 1)

    def concat(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """``cat(α · skip, β · up)``: α on the series input X1, β on the parallel position X2."""
        return torch.cat([scaled(skip, self.series_weight), scaled(up, self.parallel_weight)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 ** DEPTH or x.shape[-2] % 2 ** DEPTH:
            raise ValueError(f"resunet needs H and W divisible by {2 ** DEPTH}, got {tuple(x.shape[-2:])}")
        skips = []
        out = self.enc[0](self.stem(x))
        for i in range(DEPTH):
            skips.append(out)
            out = self.enc[i + 1](self.down[i](out))
        for j in reversed(range(DEPTH)):
            skip = skips[j]
            up = F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            out = self.dec[j](self.concat(skip, up))
        return self.head(out)


def build(c) -> ResUNet:
    """``model.name = "resunet"`` (``c``: the ``ModelConfig``)."""
    return ResUNet(c.num_classes, c.norm, c.width, 3, c.series_weight, c.parallel_weight)
