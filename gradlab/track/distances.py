"""Full gradient, distances D[e, k] by measure, per-layer distances and the noise scale.

Notation (paper eq. 1-2): batch k has m_k images and mean-loss gradient g_k, all taken at
the same frozen parameters theta_e. The full-batch gradient is the batch-size-weighted
mean G = sum_k m_k g_k / sum_k m_k, accumulated in float64 as batches arrive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from gradlab.errors import ConfigError
from gradlab.track.stores import GradStore
from gradlab.track.layout import ParamLayout


class FullGradient:
    """Running batch-size-weighted sum of flat gradients, in float64.

    Batches are first summed in a float32 buffer (a cheap in-place add) and folded into the
    float64 sum every ``fold`` batches: float32 -> float64 conversion is ~20x slower per
    element on CPU than a float32 add, and a partial sum of 8 terms loses < 1e-6 relative.
    """

    fold = 8

    def __init__(self, size: int, device: torch.device):
        self.sum = torch.zeros(size, dtype=torch.float64, device=device)
        self.partial = torch.zeros(size, dtype=torch.float32, device=device)
        self.pending = 0
        self.weight = 0

    def add(self, grad: torch.Tensor, batch_size: int) -> None:
        self.partial.add_(grad, alpha=batch_size)
        self.pending += 1
        self.weight += batch_size
        if self.pending == self.fold:
            self.flush()

    def flush(self) -> None:
        """Fold the float32 partial sum into the float64 sum (before reading or all-reducing it)."""
        if self.pending:
            self.sum.add_(self.partial)
            self.partial.zero_()
            self.pending = 0

    def mean(self) -> torch.Tensor:
        """G as float64 ``[P]``."""
        self.flush()
        return self.sum / self.weight


# --------------------------------------------------------------------------- measures

class Measure:
    """A distance between g_k and G from four reductions that the distance pass computes:
    ``sq_dist`` = |g_k - G|^2, ``dot`` = <g_k, G>, ``sq_norm`` = |g_k|^2, ``full_sq_norm`` = |G|^2."""

    name = ""

    def __call__(self, sq_dist: np.ndarray, dot: np.ndarray, sq_norm: np.ndarray, full_sq_norm: float) -> np.ndarray:
        raise NotImplementedError


class L2(Measure):
    """Euclidean distance |g_k - G| (the paper's measure)."""

    name = "l2"

    def __call__(self, sq_dist, dot, sq_norm, full_sq_norm):
        return np.sqrt(sq_dist)


class Cosine(Measure):
    """Cosine distance 1 - cos(g_k, G): 0 = same direction, 1 = orthogonal, 2 = opposite.

    Stored as a distance, not a similarity, so that small means close for every measure.
    """

    name = "cosine"

    def __call__(self, sq_dist, dot, sq_norm, full_sq_norm):
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1.0 - dot / np.sqrt(sq_norm * full_sq_norm)


MEASURES: dict[str, type[Measure]] = {m.name: m for m in (L2, Cosine)}


def check_measures(names: list[str]) -> None:
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise ConfigError(f'unknown track.measures {unknown}; choose from {", ".join(MEASURES)}')


# --------------------------------------------------------------------------- epoch stats

# Per-batch rows of this process -> rows of all K batches in batch order (sharded probe pass).
RowGather = Callable[[dict[str, "np.ndarray | None"]], dict[str, "np.ndarray | None"]]

@dataclass
class EpochStats:
    """Everything one probe pass yields for one epoch."""

    distance: dict[str, np.ndarray]  # measure -> [K]
    layer_l2: np.ndarray | None  # [K, L] per-layer |g_k - G| restricted to each tensor
    batch_norm: np.ndarray  # [K] |g_k|
    full_norm: float  # |G|
    noise_scale: float  # B_simple = noise_trace / noise_g2, NaN where undefined (see noise_scale())
    noise_g2: float = math.nan  # unbiased estimate of |G_true|^2 (may be <= 0 from noise)
    noise_trace: float = math.nan  # unbiased estimate of tr(Sigma)


def noise_scale(sq_dists: np.ndarray, full_sq_norm: float, batch_size: int, n: int) -> float:
    """Simple gradient noise scale B_simple = tr(Sigma) / |G_true|^2 (McCandlish et al. 2018)
    from unbiased estimates of its numerator and denominator (the ratio itself is not unbiased).

    The K batches partition n = K*m examples, each drawn without replacement, so
    E|g_k - G|^2 = tr(Sigma) (n - m) / (m n) with Sigma the per-example covariance
    (1/(n-1) normalised). Hence tr(Sigma) = m n / (n - m) * mean_k |g_k - G|^2, and since
    E|G|^2 = |G_true|^2 + tr(Sigma)/n, |G_true|^2 = |G|^2 - tr(Sigma)/n. Only meaningful for
    batches drawn at random (the ``random`` probe); NaN when K < 2, and NaN when the |G_true|^2
    estimate is <= 0 (noise exceeds signal at this batch count: the ratio is undefined).
    McCandlish et al. average the two estimates over many steps before dividing; the run file
    keeps both per epoch (``noise_g2``, ``noise_trace``) so readers can do the same.
    """
    if n <= batch_size or len(sq_dists) < 2:
        return math.nan
    tr_sigma, g2 = noise_scale_parts(sq_dists, full_sq_norm, batch_size, n)
    return tr_sigma / g2 if g2 > 0 else math.nan


def noise_scale_parts(sq_dists: np.ndarray, full_sq_norm: float, batch_size: int, n: int) -> tuple[float, float]:
    """The two unbiased estimates B_simple divides: (tr(Sigma), |G_true|^2); see ``noise_scale``."""
    tr_sigma = batch_size * n / (n - batch_size) * float(np.mean(sq_dists))
    return tr_sigma, full_sq_norm - tr_sigma / n


CHUNK_BYTES = 64 << 20  # rows per distance-pass chunk: its float32 temporaries stay a few x 64 MB


def epoch_stats(store: GradStore, full: torch.Tensor, layout: ParamLayout, batch_sizes: np.ndarray,
                measures: list[str], per_layer: bool, gather: RowGather | None = None) -> EpochStats:
    """One sequential pass over the stored gradients: every D[e, k] of this epoch.

    ``gather``: in a sharded probe pass (``gradlab.train.distributed``) the store holds only this
    rank's batches; ``gather`` turns the per-batch reductions of every rank into all K rows in
    batch order before the measures and the noise scale are computed.
    """
    k_total, n_layers = len(batch_sizes), len(layout)
    full32 = full.to(torch.float32)
    full_sq = float(full.pow(2).sum())
    sq = np.zeros(k_total)
    dot = np.zeros(k_total)
    nrm = np.zeros(k_total)
    layer = np.zeros((k_total, n_layers)) if per_layer else None
    off = layout.offsets
    estimate = store.reductions(full)  # a store that estimates D (sketch) skips the exact pass
    if estimate is not None:
        if per_layer:
            raise ValueError(f"the {store.name} store gives whole-model distances only; per_layer=False")
        sq, dot, nrm = estimate
    buf = None  # one reused float32 scratch [c, P]: fresh [c, P] temporaries cost page faults per row
    for s, chunk in (store.chunks(CHUNK_BYTES) if estimate is None else ()):
        g = chunk.to(full32.device, torch.float32)
        c = g.shape[0]
        if buf is None or buf.shape[0] < c:
            buf = torch.empty_like(g)
        tmp = buf[:c]
        # float32 products, summed by torch's cascade summation (relative error ~1e-7, like float64
        # accumulation of float32 data, without the slow conversion)
        torch.sub(g, full32, out=tmp).square_()
        if per_layer:
            per = torch.stack([tmp[:, off[i]:off[i + 1]].sum(1) for i in range(n_layers)], 1).double().cpu().numpy()
            layer[s:s + c] = np.sqrt(per)
            sq[s:s + c] = per.sum(1)
        else:
            sq[s:s + c] = tmp.sum(1).double().cpu().numpy()
        dot[s:s + c] = torch.mul(g, full32, out=tmp).sum(1).double().cpu().numpy()
        nrm[s:s + c] = torch.mul(g, g, out=tmp).sum(1).double().cpu().numpy()
    if gather is not None:
        rows = gather({"size": batch_sizes, "sq": sq, "dot": dot, "nrm": nrm, "layer": layer})
        batch_sizes, sq, dot, nrm, layer = (rows[k] for k in ("size", "sq", "dot", "nrm", "layer"))
    m = int(batch_sizes[0])
    if np.any(batch_sizes != m):
        raise ValueError("noise scale assumes equal batch sizes (drop_last)")
    dist = {name: MEASURES[name]()(sq, dot, nrm, full_sq) for name in measures}
    n = int(batch_sizes.sum())
    trace, g2 = noise_scale_parts(sq, full_sq, m, n) if n > m and len(sq) >= 2 else (math.nan, math.nan)
    return EpochStats(dist, layer, np.sqrt(nrm), math.sqrt(full_sq), noise_scale(sq, full_sq, m, n), g2, trace)
