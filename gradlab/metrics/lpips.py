"""Perceptual similarity with the average image (paper section 3.2.4): LPIPS-alex distance.

Our own torch implementation of LPIPS v0.1 with the AlexNet trunk (Zhang et al. 2018), so
it runs offline: inputs in [-1, 1] -> ScalingLayer -> torchvision ``alexnet().features``
with taps after relu1..relu5 -> unit-normalise each feature vector over channels ->
squared difference -> the lpips package's 1x1 linear head per layer -> spatial mean ->
sum over layers. Weights: see ``lpips_weights``. Tested equal to ``lpips.LPIPS(net='alex')``
with the same backbone to 1e-6.

The metric scores each image by its distance to the dataset's average image (the mean of
all images, pixelwise), at the native resolution (32x32 for CIFAR: relu1 is 7x7,
relu3..5 are 1x1).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from gradlab.metrics.base import Metric
from gradlab.metrics.lpips_weights import Backbone, load_backbone, load_heads

SHIFT = (-0.030, -0.088, -0.188)  # lpips ScalingLayer: ImageNet mean/std expressed on [-1, 1]
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 192, 384, 256, 256)
TAPS = (1, 4, 7, 9, 11)  # features indices of relu1..relu5
EPS = 1e-10  # as lpips.normalize_tensor


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` up to relu5 (the final max-pool is not used by LPIPS)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=False),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=False),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=False),
    )


class LPIPSAlex(nn.Module):
    """LPIPS v0.1, AlexNet trunk, linear heads; ``forward(x0, x1)`` on [-1, 1] images -> ``[N]``."""

    def __init__(self, backbone: Backbone | None = None, heads: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.features = alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        backbone = backbone or load_backbone()
        self.source = backbone.source
        self.features.load_state_dict({k.removeprefix("features."): v for k, v in backbone.state.items()
                                       if int(k.split(".")[1]) < len(self.features)})
        heads = heads or load_heads()
        for i, lin in enumerate(self.lins):
            lin.weight.data.copy_(heads[f"lin{i}.weight"])
        self.requires_grad_(False)
        self.eval()

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Channel-normalised relu1..relu5 features of [-1, 1] images."""
        h = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + EPS))
        return out

    def distance_feats(self, f0: list[torch.Tensor], f1: list[torch.Tensor]) -> torch.Tensor:
        total = 0
        for lin, a, b in zip(self.lins, f0, f1):
            total = total + lin((a - b).pow(2)).mean((2, 3))
        return total[:, 0]

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return self.distance_feats(self.taps(x0), self.taps(x1))


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32 in [-1, 1], the LPIPS input convention."""
    return images.float().div_(127.5).sub_(1.0)


class LPIPS(Metric):
    name = "lpips"
    label = "LPIPS-alex distance to the average image"
    chunk = 2000  # images per forward pass (about 100 MB of activations at 32x32)

    def __init__(self, model: LPIPSAlex | None = None):
        self._model = model

    @property
    def model(self) -> LPIPSAlex:
        if self._model is None:
            self._model = LPIPSAlex()
        return self._model

    @property
    def variant(self) -> str:
        """Backbone source: scores from different backbone weights are cached apart."""
        return self.model.source

    @staticmethod
    def average_image(images: torch.Tensor) -> torch.Tensor:
        """The pixelwise mean of ``images`` as a ``[1, 3, H, W]`` image in [-1, 1] (float64 sum, exact)."""
        mean = images.to(torch.float64).mean(0, keepdim=True) / 127.5 - 1.0
        return mean.float()

    @torch.inference_mode()
    def compute(self, images: torch.Tensor, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """``float64 [N]``: LPIPS distance of each image to the average image of ``images``."""
        model = self.model
        ref = model.taps(self.average_image(images))
        out = np.empty(images.shape[0], dtype=np.float64)
        for s in range(0, images.shape[0], self.chunk):
            x = to_unit_range(images[s:s + self.chunk])
            f = model.taps(x)
            out[s:s + len(x)] = model.distance_feats(f, [r.expand_as(t) for r, t in zip(ref, f)]).double().numpy()
            if progress:
                progress(len(x))
        return out
