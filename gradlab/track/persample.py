"""Per-sample gradient scores at theta_e, for the gradient-informed orders.

For every training image i the scoring pass needs four scalars and one short vector of its
own gradient g_i = d loss_i / d theta at theta_e: the loss, |g_i|^2, <g_i, G> with the full
gradient G = nabla_e, and (for the ``match`` order) a CountSketch S g_i. The gradients come
from ``torch.func``: ``vmap`` over ``grad`` of a ``functional_call`` on the frozen tensors,
a chunk of images at a time; each chunk's ``[c, P]`` gradients are reduced to those values
at once and dropped, so N x P is never held (memory: about 3 x c x P x 4 bytes, see
``chunk_size``).

BatchNorm has no per-sample gradient in training mode: a sample's output depends on the
whole batch through the batch statistics. The pass therefore runs the model in eval mode,
where BatchNorm normalises with theta_e's running statistics. For models without batch
statistics (``model.norm = "agc"`` or ``"none"``) eval mode computes the same function as
training, so these are the exact per-sample gradients, and a batch gradient is their mean.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from gradlab.track.probe import FrozenModel
from gradlab.track.sketch import CountSketch

# Bytes per parameter per image in flight: the vmapped gradient, its flat copy and one
# float32 temporary of the reductions (activations come on top; benchmarks/per_sample_cost.py).
_BYTES_PER_PARAM = 3 * 4


def chunk_size(num_params: int, max_bytes: int) -> int:
    """Images per vmap chunk so that the per-sample gradients of a chunk stay near ``max_bytes``."""
    return max(1, int(max_bytes) // (_BYTES_PER_PARAM * max(1, num_params)))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode for the block, then each one's own flag restored (the tracker
    must leave the training model as it found it)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, was in flags:
            m.training = was


def per_sample_grads(frozen: FrozenModel, x: torch.Tensor, y: torch.Tensor, names: Iterable[str] | None = None
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss ``[c]`` and gradient ``{name: [c, *shape]}`` of each image of ``x`` at theta_e, eval mode,
    for the parameter tensors ``names`` (default: all; the others are held fixed)."""
    keep = set(frozen.params if names is None else names)
    params = {n: p.detach() for n, p in frozen.params.items() if n in keep}
    # eval mode reads the running statistics, never writes them
    fixed = {**{n: p.detach() for n, p in frozen.params.items() if n not in keep}, **frozen.consts, **frozen.buffers}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(frozen.model, {**p, **fixed}, (xi.unsqueeze(0),))
        return frozen.loss_fn(out, yi.unsqueeze(0))

    with eval_mode(frozen.model):
        grads, loss = vmap(grad_and_value(loss_one), in_dims=(None, 0, 0))(params, x, y)
    return loss.detach(), grads


@dataclass
class SampleScores:
    """One scoring pass: per image (in the order the images were given)."""

    loss: np.ndarray  # [N] loss of the image at theta_e (eval mode)
    sq_norm: np.ndarray  # [N] |g_i|^2
    dot: np.ndarray | None  # [N] <g_i, G>; None when no full gradient was given
    sketch: torch.Tensor | None  # [N, d] float32 CountSketch S g_i; None without a sketch

    @property
    def gradnorm(self) -> np.ndarray:
        return np.sqrt(self.sq_norm)

    def align(self, full_norm: float) -> np.ndarray:
        """cos(g_i, G); 0 for a zero gradient."""
        denom = self.gradnorm * full_norm
        return np.divide(self.dot, denom, out=np.zeros_like(self.dot), where=denom > 0)

    def proj(self, full_norm: float) -> np.ndarray:
        """<g_i, G> / |G|: the length of g_i along G."""
        return self.dot / full_norm if full_norm > 0 else np.zeros_like(self.dot)


def score_samples(frozen: FrozenModel, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  full: torch.Tensor | None = None, sketch: CountSketch | None = None) -> SampleScores:
    """Reduce every image's gradient to its scores, chunk by chunk (``chunks`` yields ``(x, y)``)."""
    layout = frozen.layout
    dtype = next(iter(frozen.params.values())).dtype  # float32 unless the model is float64 (tests)
    pieces = None if full is None else [t.reshape(-1).to(dtype) for t in layout.unflatten(full).values()]
    loss, sq, dot, sk = [], [], [], []
    for x, y in chunks:
        lo, grads = per_sample_grads(frozen, x, y)
        flat = [grads[n].flatten(1) for n in layout.names]
        loss.append(lo.double().cpu())
        sq.append(sum(g.pow(2).sum(1, dtype=torch.float64) for g in flat).cpu())
        if pieces is not None:
            dot.append(sum((g @ p).double() for g, p in zip(flat, pieces)).cpu())
        if sketch is not None:
            sk.append(sketch.rows(torch.cat(flat, 1)))
        del grads, flat
    return SampleScores(torch.cat(loss).numpy(), torch.cat(sq).numpy(),
                        torch.cat(dot).numpy() if dot else None, torch.cat(sk) if sk else None)
