"""The distance pass: full gradient, then every tracked quantity of one probe pass.

The quantities themselves (D by measure, per-layer D, norms, noise-scale components) are
declared in ``gradlab.quantities``; this module computes the reductions of the stored batch
gradients they need, in one sequential read of the store, and hands them over.

Notation (paper eq. 1-2): batch k has m_k images and mean-loss gradient g_k, all taken at
the same frozen parameters theta_e. The full-batch gradient is the batch-size-weighted
mean G = sum_k m_k g_k / sum_k m_k, accumulated in float64 as batches arrive.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from gradlab import quantities as Q
from gradlab.track.layout import ParamLayout
from gradlab.track.stores import GradStore


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


# --------------------------------------------------------------------------- label composition

class ClassCounter:
    """Each probe batch's targets counted by class (the pass value ``Q.CLASS_COUNTS``).

    Counted on the targets' device into a fixed-width row per batch, without a host sync per
    batch (the pass stays asynchronous on a GPU); the rows reach the host once, in ``matrix``.
    C = the model output's dimension 1 (classes for cross-entropy, also of a segmentation
    model's ``[B, C, H, W]`` output): images are counted for one label per image, pixels for
    masks. Labels < 0 (cross-entropy's ignore_index) are left out; a batch with a label >= C
    gets a NaN row. Targets that are not integer labels (float: soft or regression targets),
    or an output without a class dimension, give no counts at all (``matrix`` -> None).
    """

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []
        self.usable = True

    def add(self, y: torch.Tensor, out_shape: Sequence[int]) -> None:
        if not self.usable:
            return
        if y.is_floating_point() or y.is_complex() or len(out_shape) < 2 or y.shape[:1] != tuple(out_shape[:1]):
            self.usable, self.rows = False, []
            return
        c = int(out_shape[1])
        flat = y.reshape(-1).long()
        bins = torch.where(flat < 0, c + 1, torch.where(flat >= c, c, flat))  # c: out of range, c + 1: ignored
        self.rows.append(torch.zeros(c + 2, dtype=torch.int64, device=y.device).scatter_add_(0, bins,
                                                                                              torch.ones_like(bins)))

    @property
    def width(self) -> int:
        """C, the classes counted (0 without counts; -1 when the targets are not class labels)."""
        if not self.usable:
            return -1
        return max((len(r) - 2 for r in self.rows), default=0)

    def matrix(self, num_batches: int, width: int | None = None) -> np.ndarray | None:
        """``[num_batches, C]`` float64 counts (NaN rows: a label >= C, or unknown), or None.
        ``width``: C agreed over the ranks of a sharded pass (``max`` of every rank's ``width``)."""
        width = self.width if width is None else width
        if width < 0 or (not self.usable and width == self.width):
            return None
        out = np.full((num_batches, width), np.nan)
        if not self.usable or not self.rows:
            return out
        rows = [torch.nn.functional.pad(r, (0, width + 2 - len(r))) if len(r) < width + 2 else r for r in self.rows]
        counts = torch.stack(rows).cpu().numpy().astype(np.float64)  # one transfer for the pass
        ok = counts[:, width] == 0  # no label >= C
        out[: len(rows)][ok] = counts[ok, :width]
        return out


# --------------------------------------------------------------------------- epoch stats

# Per-batch rows of this process -> rows of all K batches in batch order (sharded probe pass).
RowGather = Callable[[dict[str, "np.ndarray | None"]], dict[str, "np.ndarray | None"]]


@dataclass
class EpochStats:
    """Everything one probe pass yields for one epoch: each active quantity's row, by name
    (``gradlab.quantities``), and the reductions they were computed from."""

    values: dict[str, Any]
    reductions: dict[str, Any]

    @property
    def distance(self) -> dict[str, np.ndarray]:
        """measure -> D ``[K]`` (the ``distance_<m>`` quantities)."""
        return {q.measure: self.values[q.name] for q in Q.QUANTITIES.values()
                if isinstance(q, Q.Measure) and q.name in self.values}

    def __getattr__(self, name: str) -> Any:  # batch_norm, full_norm, noise_scale, ... by quantity name
        values = self.__dict__.get("values", {})
        key = {"layer_l2": Q.LayerL2.name}.get(name, name)
        if key in values or key in Q.QUANTITIES:
            return values.get(key)
        raise AttributeError(name)


CHUNK_BYTES = 64 << 20  # rows per distance-pass chunk: its float32 temporaries stay a few x 64 MB


def epoch_stats(store: GradStore, full: torch.Tensor, layout: ParamLayout, batch_sizes: np.ndarray,
                measures: Sequence[str], per_layer: bool, gather: RowGather | None = None,
                batch_loss: np.ndarray | None = None, class_counts: np.ndarray | None = None,
                quantities: Sequence[Q.Quantity] | None = None, target: torch.Tensor | None = None) -> EpochStats:
    """One sequential pass over the stored gradients: every active quantity of this epoch.
    ``batch_loss`` and ``class_counts`` (``ClassCounter.matrix``) are the probe pass's own values.

    ``target``: the common target T (float64 ``[P]``), the reference probe's full gradient at the
    same theta_e; the ``TARGET_*`` reductions measure every g_k against it (``Q.CommonL2``). None
    leaves the common-target quantities out (no reference probe in this tracker).

    ``gather``: in a sharded probe pass (``gradlab.train.distributed``) the store holds only this
    rank's batches; ``gather`` turns the per-batch reductions of every rank into all K rows in
    batch order before the quantities are computed.
    """
    active = (list(quantities) if quantities is not None else Q.active(measures, per_layer, common=True))
    if target is None:  # no reference probe: the common-target quantities are left out
        active = [q for q in active if not Q.TARGET.intersection(q.needs)]
    need = Q.needed(active)
    full_sq = float(full.pow(2).sum())
    estimate = store.reductions(full)  # a store that estimates D (sketch) skips the exact pass
    if estimate is not None:
        Q.check_store(store.name, active)
        rows = dict(zip((Q.SQ_DIST, Q.DOT, Q.SQ_NORM), estimate))
        if target is not None:  # the same estimator against T: |g_k - T|^2 and <g_k, T>
            rows[Q.TARGET_SQ_DIST], rows[Q.TARGET_DOT] = store.reductions(target)[:2]
    else:
        rows = _exact_reductions(store, full, layout, len(batch_sizes), Q.LAYER_SQ_DIST in need, target)
    rows[Q.BATCH_SIZE] = batch_sizes
    if batch_loss is not None:
        rows[Q.BATCH_LOSS] = batch_loss
    if class_counts is not None:
        rows[Q.CLASS_COUNTS] = class_counts
    if gather is not None:
        rows = gather(rows)
    r = {**rows, Q.FULL_SQ_NORM: full_sq}
    if target is not None:
        r[Q.TARGET_SQ_NORM] = float(target.pow(2).sum())
    return EpochStats({q.name: q.compute(r) for q in active}, r)


def _exact_reductions(store: GradStore, full: torch.Tensor, layout: ParamLayout, k_total: int,
                      per_layer: bool, target: torch.Tensor | None = None) -> dict[str, np.ndarray | None]:
    """``sq_dist``, ``dot``, ``sq_norm`` (and ``layer_sq_dist`` when asked) of every stored g_k;
    with a ``target`` also ``target_sq_dist`` and ``target_dot`` against it."""
    n_layers = len(layout)
    full32 = full.to(torch.float32)
    target32 = None if target is None else target.to(full32.device, torch.float32)
    sq, dot, nrm = np.zeros(k_total), np.zeros(k_total), np.zeros(k_total)
    t_sq, t_dot = (np.zeros(k_total), np.zeros(k_total)) if target is not None else (None, None)
    layer = np.zeros((k_total, n_layers)) if per_layer else None
    off = layout.offsets
    buf = None  # one reused float32 scratch [c, P]: fresh [c, P] temporaries cost page faults per row
    for s, chunk in store.chunks(CHUNK_BYTES):
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
            layer[s:s + c] = per
            sq[s:s + c] = per.sum(1)
        else:
            sq[s:s + c] = tmp.sum(1).double().cpu().numpy()
        dot[s:s + c] = torch.mul(g, full32, out=tmp).sum(1).double().cpu().numpy()
        nrm[s:s + c] = torch.mul(g, g, out=tmp).sum(1).double().cpu().numpy()
        if target32 is not None:  # |g_k - T|^2 taken directly (not |g|^2 - 2<g,T> + |T|^2: no cancellation)
            t_sq[s:s + c] = torch.sub(g, target32, out=tmp).square_().sum(1).double().cpu().numpy()
            t_dot[s:s + c] = torch.mul(g, target32, out=tmp).sum(1).double().cpu().numpy()
    out = {Q.SQ_DIST: sq, Q.DOT: dot, Q.SQ_NORM: nrm, Q.LAYER_SQ_DIST: layer}
    if target is not None:
        out.update({Q.TARGET_SQ_DIST: t_sq, Q.TARGET_DOT: t_dot})
    return out
