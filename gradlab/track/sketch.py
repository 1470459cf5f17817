"""CountSketch of flat gradients, and distance estimates from sketches plus exact norms.

A CountSketch S: R^P -> R^d sends coordinate i to bucket h(i) with sign s(i) (both drawn
once from a seed): (S g)[j] = sum_{i: h(i) = j} s(i) g_i. It is linear, costs O(P) per
gradient (one ``index_add_``), and preserves inner products in expectation:
E <S a, S b> = <a, b>, with variance about (|a|^2 |b|^2 + <a, b>^2) / d.

Estimator used for D (``sketch_reductions``). The store keeps, per batch, the sketch S g_k
and the exact squared norm |g_k|^2; the full gradient G is exact (float64 running sum, see
``distances.FullGradient``) and sketched once at epoch end. The only unknown of the four
reductions the measures need is the angle between g_k and G, estimated from the sketches
as a normalised inner product and rescaled by the exact norms:

    cos_hat = <S g_k, S G> / (|S g_k| |S G|)
    dot_hat = cos_hat |g_k| |G|
    |g_k - G|^2_hat = |g_k|^2 + |G|^2 - 2 dot_hat     (clipped at 0)

The normalised ratio cancels most of the sketch's norm distortion: its error is about
(1 - cos^2) / sqrt(d) instead of sqrt((1 + cos^2) / d) for the raw inner product, so with
the exact norms, the relative error of |g_k - G|^2 is at most about 1 / sqrt(d) when the
batch gradients are noise-dominated (cos ~ 0), and ~2 / sqrt(d) when g_k ~ G. D in l2 (a
square root) halves that: ~0.5 % at d = 8192 (measured: ``benchmarks/sketch_accuracy.py``).
Cosine distance is 1 - cos_hat.

Per-layer distances are not estimated (a single sketch mixes the layers); the config
rejects ``track.per_layer = true`` with ``track.grads = "sketch"``.
"""
from __future__ import annotations

import numpy as np
import torch


class CountSketch:
    """A fixed random CountSketch R^P -> R^d on ``device``; same seed, same sketch."""

    def __init__(self, size: int, dim: int, device: torch.device, seed: int = 0):
        if dim < 1:
            raise ValueError(f"sketch dimension must be >= 1, got {dim}")
        gen = torch.Generator().manual_seed(seed)
        self.size, self.dim = size, dim
        # int32 buckets and float32 signs: 8 bytes per parameter, kept for the run
        self.bucket = torch.randint(0, dim, (size,), generator=gen, dtype=torch.int32).to(device)
        self.sign = (torch.randint(0, 2, (size,), generator=gen, dtype=torch.int8) * 2 - 1).float().to(device)
        self._signed = torch.empty(size, dtype=torch.float32, device=device)  # reused: no [P] allocation per call

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        """S g as float64 ``[d]``.

        Accumulated in float32 (a bucket sums ~P/d terms: relative rounding ~1e-6, far below
        the sketch's own ~1/sqrt(d) error), 4-5x faster on CPU than float64.
        """
        torch.mul(g.to(torch.float32), self.sign, out=self._signed)
        out = torch.zeros(self.dim, dtype=torch.float32, device=g.device)
        return out.index_add_(0, self.bucket, self._signed).double()

    def rows(self, g: torch.Tensor) -> torch.Tensor:
        """S g_i for every row of ``g`` ``[c, P]``, as float32 ``[c, d]`` (per-sample gradients).

        One 1-D ``index_add_`` per row: on CPU a single ``index_add_`` along dim 1 of ``[c, d]``
        was 2x slower at P = 95k and 11x slower at P = 11M (measured, torch 2.14)."""
        out = torch.zeros(g.shape[0], self.dim, dtype=torch.float32, device=g.device)
        for i in range(g.shape[0]):
            torch.mul(g[i].to(torch.float32), self.sign, out=self._signed)
            out[i].index_add_(0, self.bucket, self._signed)
        return out

    def add_rows(self, out: torch.Tensor, g: torch.Tensor, offset: int) -> None:
        """``out[i] += S g_i`` for rows ``g`` [c, n] that are coordinates ``offset .. offset + n`` of the
        flat vector: one parameter tensor's per-sample gradients, sketched as they are formed
        (``gradlab.track.ghost``), so ``add_rows`` over every tensor equals ``rows`` of the whole."""
        n = g.shape[1]
        bucket, sign, signed = self.bucket[offset:offset + n], self.sign[offset:offset + n], self._signed[:n]
        for i in range(g.shape[0]):
            torch.mul(g[i].to(torch.float32), sign, out=signed)
            out[i].index_add_(0, bucket, signed)


def sketch_reductions(sketches: torch.Tensor, sq_norms: np.ndarray, full_sketch: torch.Tensor,
                      full_sq_norm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimated ``(sq_dist, dot, sq_norm)`` per batch (see the module docstring).

    ``sketches`` [K, d] = S g_k, ``sq_norms`` [K] = exact |g_k|^2, ``full_sketch`` [d] = S G,
    ``full_sq_norm`` = exact |G|^2. ``sq_norm`` is returned exact.
    """
    s = sketches.to(torch.float64)
    f = full_sketch.to(torch.float64)
    denom = torch.linalg.vector_norm(s, dim=1) * torch.linalg.vector_norm(f)
    cos = torch.where(denom > 0, (s @ f) / denom.clamp_min(1e-300), torch.zeros_like(denom)).clamp(-1, 1)
    cos = cos.cpu().numpy()
    norms = np.sqrt(sq_norms)
    full = float(np.sqrt(full_sq_norm))
    dot = cos * norms * full
    sq_dist = np.maximum(sq_norms + full_sq_norm - 2 * dot, 0.0)
    return sq_dist, dot, np.asarray(sq_norms, dtype=np.float64)
