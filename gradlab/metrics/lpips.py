"""Perceptual similarity with the average image (paper section 3.2.4): LPIPS-alex distance.

The forward pass is the ``lpips`` package's own ``LPIPS(net="alex")`` module (Zhang et al.
2018, v0.1: ScalingLayer -> AlexNet relu1..relu5 -> unit-normalised features -> squared
difference -> linear heads -> spatial mean -> sum), built without any download: its linear
heads ship in the lpips wheel, and its AlexNet trunk gets the ImageNet weights converted
offline by ``lpips_weights`` (restricted unpickler). We call the module's parts rather than
``LPIPS.forward`` only so that the average image's features are computed once, not once per
image; a test checks the result against ``LPIPS.forward`` itself to 1e-6.

The metric scores each image by its distance to the dataset's average image (the mean of
all images, pixelwise), at the native resolution (32x32 for CIFAR: relu1 is 7x7,
relu3..5 are 1x1).
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

from gradlab.metrics.base import Metric
from gradlab.metrics.lpips_weights import Backbone, load_backbone, lpips_heads_path

# torchvision alexnet().features index -> lpips.pretrained_networks.alexnet slice holding it
SLICE_OF = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def lpips_module(backbone: Backbone) -> nn.Module:
    """``lpips.LPIPS(net="alex")`` with ``backbone``'s AlexNet weights; downloads nothing
    (``pnet_rand=True`` skips torchvision's download; the heads come from the wheel)."""
    lpips_heads_path()  # a missing or broken lpips install is one line naming the fix
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" notes
        lp = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    state = {f"slice{SLICE_OF[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v for k, v in backbone.state.items()
             if int(k.split(".")[1]) in SLICE_OF}
    lp.net.load_state_dict(state)
    return lp.eval().requires_grad_(False)


class LPIPSAlex(nn.Module):
    """LPIPS v0.1, AlexNet trunk, linear heads; ``forward(x0, x1)`` on [-1, 1] images -> ``[N]``."""

    def __init__(self, backbone: Backbone | None = None):
        super().__init__()
        backbone = backbone or load_backbone()
        self.source = backbone.source
        self.lp = lpips_module(backbone)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Channel-normalised relu1..relu5 features of [-1, 1] images."""
        import lpips

        return [lpips.normalize_tensor(h) for h in self.lp.net(self.lp.scaling_layer(x))]

    def distance_feats(self, f0: list[torch.Tensor], f1: list[torch.Tensor]) -> torch.Tensor:
        total = 0
        for lin, a, b in zip(self.lp.lins, f0, f1):
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
