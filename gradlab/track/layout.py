"""Flat parameter-vector layout: which slice of a flat gradient belongs to which tensor.

A "layer" in gradlab is one parameter tensor (``layer1.0.conv1.weight``). Its kind names
what it is, for grouping plots: ``conv.weight``, ``linear.weight``, ``bn.weight``,
``bn.bias``, ``bias`` (conv/linear bias), and kinds that a module class declares in its
``param_kind`` attribute (for example ``gradlab.models.agc.AGC``: ``agc.lambda``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# torch's module classes -> kind prefix; a module class of your own declares ``param_kind``.
MODULE_KINDS: dict[type, str] = {
    nn.Conv2d: "conv",
    nn.Linear: "linear",
    nn.BatchNorm2d: "bn",
    nn.BatchNorm1d: "bn",
    nn.GroupNorm: "gn",
    nn.LayerNorm: "ln",
}


def param_kind(module: nn.Module, pname: str) -> str:
    """Kind of parameter ``pname`` owned directly by ``module``."""
    prefix = getattr(type(module), "param_kind", None) or next(
        (k for cls, k in MODULE_KINDS.items() if isinstance(module, cls)), type(module).__name__.lower())
    if pname == "bias" and prefix in ("conv", "linear"):
        return "bias"
    return f"{prefix}.{pname}"


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and flat offsets of the trainable parameters of a model."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    kinds: tuple[str, ...]

    @classmethod
    def of(cls, model: nn.Module) -> "ParamLayout":
        names, shapes, kinds = [], [], []
        for mname, module in model.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                if p.requires_grad:
                    names.append(f"{mname}.{pname}" if mname else pname)
                    shapes.append(tuple(p.shape))
                    kinds.append(param_kind(module, pname))
        return cls(tuple(names), tuple(shapes), tuple(kinds))

    @property
    def numels(self) -> np.ndarray:
        return np.array([int(np.prod(s)) for s in self.shapes], dtype=np.int64)

    @property
    def offsets(self) -> np.ndarray:
        """[L + 1] start offsets; layer i is ``flat[offsets[i]:offsets[i + 1]]``."""
        return np.concatenate([[0], np.cumsum(self.numels)])

    @property
    def size(self) -> int:
        return int(self.numels.sum())

    def __len__(self) -> int:
        return len(self.names)

    def flatten(self, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...],
                out: torch.Tensor | None = None) -> torch.Tensor:
        """Concatenate per-layer tensors (in layout order) into one flat vector."""
        flat = [t.reshape(-1) for t in tensors]
        if out is None:
            return torch.cat(flat)
        if out.dtype == flat[0].dtype:
            return torch.cat(flat, out=out)
        out.copy_(torch.cat(flat))
        return out

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.offsets
        return {n: flat[o[i]:o[i + 1]].view(s) for i, (n, s) in enumerate(zip(self.names, self.shapes))}
