"""Automatic gain control (AGC) of *Deep Control* (Ruff, 2017), eq. (1).

Per channel c and per sample s:  y[s, c] = (x[s, c] - λ_c · mean_hw(x[s, c])) · γ_c + β_c

λ (scaled mean subtraction), γ (gain) and β (bias) are trainable per-channel vectors,
initialised to 1, 1, 0. The mean is each sample's own spatial mean, so there are no batch
statistics and no running buffers: training and inference compute the same function, and
a batch gradient is the mean of the per-sample gradients. ``model.norm = "agc"`` puts one
in place of every BatchNorm (see ``gradlab.models.norm``). Its parameters have the layout
kinds ``agc.lambda``, ``agc.gamma`` and ``agc.beta``.
"""
from __future__ import annotations

import torch
from torch import nn


class AGC(nn.Module):
    """AGC over ``channels`` channels of an ``[N, C, H, W]`` input."""

    param_kind = "agc"  # layout kind prefix of its parameters (gradlab.track.layout reads it)

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        # "lambda" is a keyword, so the parameter is registered by name (kind "agc.lambda").
        self.register_parameter("lambda", nn.Parameter(torch.ones(channels)))
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    @property
    def lam(self) -> torch.Tensor:
        return getattr(self, "lambda")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"AGC expects [N, C, H, W] input, got shape {tuple(x.shape)}")
        c = self.channels
        mean = x.mean(dim=(2, 3), keepdim=True)  # per sample, per channel
        return (x - self.lam.view(1, c, 1, 1) * mean) * self.gamma.view(1, c, 1, 1) + self.beta.view(1, c, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}"

