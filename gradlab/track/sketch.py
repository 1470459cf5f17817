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

from typing import Sequence

import numpy as np
import torch


class CountSketch:
    """A fixed random CountSketch R^P -> R^d on ``device``; same seed, same sketch."""

    def __init__(self, size: int, dim: int, device: torch.device, seed: int = 0,
                 shapes: Sequence[tuple[int, ...]] | None = None):
        """``shapes``: the flat vector's parameter tensors in order (``ParamLayout.shapes``); then every
        tensor of two or more dimensions, seen as a matrix [rows, cols] (rows = its first dimension), is
        hashed as a tensor product: h(o, j) = (h1(o) + h2(j)) mod d, s(o, j) = s1(o) s2(j) (the
        TensorSketch of Pham & Pagh 2013, "Fast and scalable polynomial kernels via explicit feature
        maps"). Inner products stay unbiased (two coordinates collide with probability 1/d and their
        signs are independent), and a sum of outer products sum_t b_t a_t^T sketches by FFT from its
        factors without being formed (``add_outer``). Without ``shapes``, every coordinate is hashed
        independently."""
        if dim < 1:
            raise ValueError(f"sketch dimension must be >= 1, got {dim}")
        gen = torch.Generator().manual_seed(seed)
        self.size, self.dim = size, dim
        self.factors: dict[int, tuple[torch.Tensor, ...]] = {}  # offset -> (h1, s1, h2, s2) of a matrix tensor
        if shapes is None:
            bucket, sign = _hashes(size, dim, gen)
        else:
            bucket, sign = self._tensor_hashes(shapes, dim, gen, device)
            if len(bucket) != size:
                raise ValueError(f"shapes hold {len(bucket)} elements, the sketch {size}")
        # int32 buckets and float32 signs: 8 bytes per parameter, kept for the run
        self.bucket, self.sign = bucket.to(device), sign.to(device)
        self._signed = torch.empty(size, dtype=torch.float32, device=device)  # reused: no [P] allocation per call

    def _tensor_hashes(self, shapes: Sequence[tuple[int, ...]], dim: int, gen: torch.Generator,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        buckets, signs, offset = [], [], 0
        for shape in shapes:
            n = int(np.prod(shape))
            if len(shape) < 2:
                b, s = _hashes(n, dim, gen)
            else:
                (h1, s1), (h2, s2) = _hashes(shape[0], dim, gen), _hashes(n // shape[0], dim, gen)
                b = ((h1[:, None] + h2[None, :]) % dim).reshape(-1)
                s = (s1[:, None] * s2[None, :]).reshape(-1)
                self.factors[offset] = tuple(t.to(device) for t in (h1.long(), s1, h2.long(), s2))
            buckets.append(b)
            signs.append(s)
            offset += n
        return torch.cat(buckets), torch.cat(signs)

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

    def add_outer(self, out: torch.Tensor, offset: int, b: torch.Tensor, a: torch.Tensor) -> None:
        """``out[i] += S W_i`` for the matrix tensor at ``offset`` (``factors``), rows [G p] x cols [d],
        whose per-sample value is W_i = B_i A_i^T per group: ``b`` [c, G, p, T], ``a`` [c, G, d, T].

        S (b a^T) is the circular convolution of the row and column sketches S1 b and S2 a, so
        S W_i = irfft(sum_{g,t} rfft(S1 b_{g,t}) rfft(S2 a_{g,t})): cost T (p + d + d log d) per group
        instead of forming W_i (T p d) and hashing it (p d)."""
        h1, s1, h2, s2 = self.factors[offset]
        c, groups, p, t = b.shape
        d, dim = a.shape[2], self.dim
        lift = torch.arange(groups, device=b.device).repeat_interleave(p) * dim  # group g hashes into its own block
        u = b.new_zeros(c, groups * dim, t).index_add_(1, lift + h1, b.reshape(c, groups * p, t) * s1[:, None].to(b))
        lift = torch.arange(groups, device=a.device).repeat_interleave(d) * dim
        v = a.new_zeros(c, groups * dim, t).index_add_(1, lift + h2.repeat(groups),
                                                         a.reshape(c, groups * d, t) * s2.repeat(groups)[:, None].to(a))
        fu = torch.fft.rfft(u.view(c, groups, dim, t), dim=2)
        fv = torch.fft.rfft(v.view(c, groups, dim, t), dim=2)
        out += torch.fft.irfft(torch.einsum("cgft,cgft->cf", fu, fv), n=dim, dim=1).to(out.dtype)

    def add_rows(self, out: torch.Tensor, g: torch.Tensor, offset: int) -> None:
        """``out[i] += S g_i`` for rows ``g`` [c, n] that are coordinates ``offset .. offset + n`` of the
        flat vector: one parameter tensor's per-sample gradients, sketched as they are formed
        (``gradlab.track.ghost``), so ``add_rows`` over every tensor equals ``rows`` of the whole."""
        n = g.shape[1]
        bucket, sign, signed = self.bucket[offset:offset + n], self.sign[offset:offset + n], self._signed[:n]
        for i in range(g.shape[0]):
            torch.mul(g[i].to(torch.float32), sign, out=signed)
            out[i].index_add_(0, bucket, signed)


def _hashes(n: int, dim: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` independent buckets (int32) and signs (float32)."""
    bucket = torch.randint(0, dim, (n,), generator=gen, dtype=torch.int32)
    return bucket, (torch.randint(0, 2, (n,), generator=gen, dtype=torch.int8) * 2 - 1).float()


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
