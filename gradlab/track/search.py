"""The ``search`` order: batches found by local search on the real train-mode distance to G.

``search`` is the achievable end of the comparison for any model, BatchNorm included. Every
other gradient-informed order scores images one at a time in eval mode, while each probe batch
is taken in train mode, on its own batch statistics; with BatchNorm the per-image scores then
mislead (``match`` ends up farther from G than random batches). Here the objective is
D_k = |g_k - nabla_e|, g_k the batch's real gradient at theta_e in train mode and nabla_e the
full gradient of the epoch's ``random`` probe pass. (The probe pass stores D against the mean of
the probe's own batch gradients; without batch statistics that is nabla_e, with BatchNorm it
depends on the partition, and a partition sorted by intensity has a smaller one: searched against
its own mean, the batches ended no closer to nabla_e than random ones; docs/design.md "The
``search`` reference".) Minimising the mean of D_k over a partition of the training set into
K batches is gradient matching, the objective of GradMatch (Killamsetty et al., ICML 2021) and
CRAIG (Mirzasoleiman et al., ICML 2020), with weights fixed to 1 / m and every image in one
batch (as in ``gradlab.track.match``).

1. **Start**: the best of a few cheap partitions, by their real mean D (K batch gradients each):
   class-stratified random batches (``random@class``), and class-balanced cuts (every batch
   holds every class in proportion, ``gradlab.data.orders.by_class``) of the images sorted by
   intensity (when the dataset has raw pixels), by their projection on nabla_e and by their loss
   (tried in the order of ``STARTS``, within a quarter of the budget).
2. **Local search** (swap moves, first-improvement hill climbing; Papadimitriou & Steiglitz,
   *Combinatorial Optimization*, 1982, ch. 19): a move swaps a block of t images of batch a with
   t images of batch b. Moves are proposed to first order from the CountSketch S g_i of every
   image's per-sample gradient (``gradlab.track.sketch``, the scoring pass ``match`` uses) and
   the sketch of each batch's real residual r_k = S (g_k - G): the swap changes r_a by
   delta = alpha (sum_J S g_j - sum_I S g_i) / m and r_b by -delta; the block is grown greedily
   while |r_a + delta|^2 + |r_b - delta|^2 falls. alpha corrects the eval-mode per-sample
   gradients' scale against the train-mode batches (least squares over the moves evaluated so
   far). A move is **accepted only when the real train-mode mean D drops**: both batch
   gradients are recomputed at theta_e, as the probe pass computes them. A rejected pair is retried with half the block,
   down to single swaps.

The cost is bounded by ``passes`` probe passes' worth of batch gradients (``track.search_passes``
x K), starts included; a move costs 2. ``SearchRecord`` is what the run file keeps per epoch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from gradlab.data.orders import by_class

STARTS = ("intensity@class", "random@class", "proj@class", "loss@class")  # in the order they are tried
START_SHARE = 4  # at most 1 / START_SHARE of the budget evaluates starts (at least one start)
FIRST_BLOCK = 8  # a pair's first move swaps at most m / FIRST_BLOCK images each way
PAIRS_PER_PROPOSAL = 4  # batch pairs whose greedy block is estimated at each step (largest |r_a - r_b| first)


@dataclass
class SearchRecord:
    """One epoch's search, as the run file stores it (``/probes/<o>/search_<field>``)."""

    evals: int = 0  # train-mode batch gradients evaluated (starts and moves)
    seconds: float = 0.0  # wall time of the search (the scoring pass excluded)
    proposed: int = 0  # moves evaluated
    accepted: int = 0  # moves kept (the real D_a + D_b dropped)
    d_before: float = math.nan  # mean real |g_k - nabla_e| of the best start (nabla_e: the random probe's)
    d_after: float = math.nan  # the same of the batches the search returns
    # their mean D against their own mean gradient: the D the probe pass stores (equal to d_after without BatchNorm)
    d_own: float = math.nan
    start: int = -1  # which start won: its position in ``STARTS`` (the probe attribute search_starts)

    def row(self) -> dict[str, float]:
        return {f"search_{k}": float(v) for k, v in self.__dict__.items()}


class BatchEvaluator:
    """Real train-mode batch gradients at theta_e (as the probe pass takes them), counted against a budget."""

    def __init__(self, frozen, loader, sketch, limit: int):
        self.frozen, self.loader, self.sketch, self.limit = frozen, loader, sketch, limit
        self.count = 0

    def left(self) -> int:
        return self.limit - self.count

    def __call__(self, idx: np.ndarray) -> torch.Tensor:
        """The flat float32 gradient ``[P]`` of the batch of dataset indices ``idx``."""
        if self.count >= self.limit:
            raise RuntimeError("search budget exceeded")
        self.count += 1
        x, y = self.loader.get(torch.from_numpy(np.ascontiguousarray(idx)))
        dev = next(iter(self.frozen.params.values())).device
        with self.frozen.training_modes():
            return self.frozen.grad(x.to(dev), y.to(dev)).clone()


class Partition:
    """K batches with their real gradients ``[K, P]`` (as the memory store holds a pass), their
    D_k = |g_k - nabla_e| against the reference probe's full gradient ``target`` and sketches S g_k."""

    def __init__(self, ev: BatchEvaluator, batches: np.ndarray, target: torch.Tensor):
        self.ev, self.batches, self.target = ev, batches.copy(), target.double()
        self.target_sketch = ev.sketch(target)
        self.grads = torch.stack([ev(b) for b in self.batches])
        self.sketches = torch.stack([ev.sketch(g) for g in self.grads])  # float64 [K, d]
        self.d = self.distances(self.target)

    def distances(self, mean: torch.Tensor, changed: dict[int, torch.Tensor] | None = None) -> np.ndarray:
        """D_k against ``mean``, with the gradients of ``changed`` batches replaced."""
        out = np.empty(len(self.batches))
        for k in range(len(self.batches)):
            g = (changed or {}).get(k, self.grads[k])
            out[k] = float((g.double() - mean).norm())
        return out

    def residuals(self) -> torch.Tensor:
        """S (g_k - nabla_e) ``[K, d]``."""
        return self.sketches - self.target_sketch

    def own_distances(self) -> np.ndarray:
        """D_k against the partition's own mean gradient, as the probe pass stores D (float64 sum)."""
        return self.distances(self.grads.double().sum(0) / len(self.batches))

    def try_swap(self, a: int, b: int, new_a: np.ndarray, new_b: np.ndarray) -> tuple[bool, torch.Tensor]:
        """Evaluate batches a and b as ``new_a``, ``new_b``; keep them when the mean D drops.
        Returns ``(accepted, actual [S g_a, S g_b] change)``."""
        ga, gb = self.ev(new_a), self.ev(new_b)
        d = self.d.copy()
        d[a], d[b] = (float((g.double() - self.target).norm()) for g in (ga, gb))
        sa, sb = self.ev.sketch(ga), self.ev.sketch(gb)
        change = torch.cat([sa - self.sketches[a], sb - self.sketches[b]])
        if not d.mean() < self.d.mean():
            return False, change
        self.batches[a], self.batches[b] = new_a, new_b
        self.grads[a], self.grads[b], self.sketches[a], self.sketches[b] = ga, gb, sa, sb
        self.d = d
        return True, change


def start_orders(n: int, labels: np.ndarray, batch_size: int, keys: dict[str, np.ndarray | None],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The candidate starts, each an index ``[N]`` (batch k = positions k*m ..): ``random@class``
    and the class-balanced cut of each sort key (``intensity``, ``proj``, ``loss``; None: not
    available), named as in ``STARTS``."""
    out = {"random@class": by_class(rng.permutation(n).astype(np.int64), batch_size, labels)}
    for name, key in keys.items():
        if key is not None:
            out[f"{name}@class"] = by_class(np.argsort(key, kind="stable").astype(np.int64), batch_size, labels)
    return {name: out[name] for name in STARTS if name in out}


def best_start(ev: BatchEvaluator, starts: dict[str, np.ndarray], k: int, m: int, max_starts: int,
               target: torch.Tensor) -> tuple[int, np.ndarray, Partition]:
    """``(position in STARTS, index, partition)`` of the start with the least real mean D, of the
    first ``max_starts``."""
    best = None
    for name, index in list(starts.items())[:max_starts]:
        part = Partition(ev, index[: k * m].reshape(k, m), target)
        if best is None or part.d.mean() < best[2].d.mean():
            best = (STARTS.index(name), index, part)
    assert best is not None
    return best


def greedy_block(sa: torch.Tensor, sb: torch.Tensor, ra: torch.Tensor, rb: torch.Tensor, m: int, t_max: int
                 ) -> tuple[list[int], list[int], float, torch.Tensor]:
    """Rows I of ``sa`` and J of ``sb`` (per-sample sketches of batches a and b) whose swap lowers
    |ra + delta|^2 + |rb - delta|^2 most to first order, delta = (sum_J sb - sum_I sa) / m, picked
    pair by pair while that falls (at most ``t_max`` pairs). Returns ``(I, J, change, delta)``."""
    dist = (sa.pow(2).sum(1)[:, None] + sb.pow(2).sum(1)[None, :] - 2 * sa @ sb.T) / m ** 2
    delta = torch.zeros_like(ra)
    used_a = torch.zeros(len(sa), dtype=torch.bool)
    used_b = torch.zeros(len(sb), dtype=torch.bool)
    rows, cols, total = [], [], 0.0
    for _ in range(t_max):
        w = ra - rb + 2 * delta  # d/d delta of the objective, halved
        gain = 2 * ((sb @ w)[None, :] - (sa @ w)[:, None]) / m + 2 * dist
        gain[used_a, :] = math.inf
        gain[:, used_b] = math.inf
        flat = int(torch.argmin(gain))
        i, j = divmod(flat, len(sb))
        if not float(gain[i, j]) < 0:
            break
        total += float(gain[i, j])
        used_a[i], used_b[j] = True, True
        rows.append(i)
        cols.append(j)
        delta = delta + (sb[j] - sa[i]) / m
    return rows, cols, total, delta


class LocalSearch:
    """Swap moves between batches, accepted on the real mean D (module docstring, step 2)."""

    def __init__(self, part: Partition, samples: torch.Tensor, record: SearchRecord):
        self.part, self.record = part, record
        self.samples = samples.double()  # [N, d] per-sample sketches, by dataset index
        self.m = part.batches.shape[1]
        self.t_max: dict[tuple[int, int], int] = {}  # (a, b) -> largest block still worth trying; 0: none
        self.fit = [0.0, 0.0]  # sums of <predicted, actual> and |predicted|^2: alpha, the scale of S g_i

    @property
    def alpha(self) -> float:
        return min(10.0, max(0.1, self.fit[0] / self.fit[1])) if self.fit[1] > 0 else 1.0

    def run(self) -> None:
        while self.part.ev.left() >= 2:
            move = self.propose()
            if move is None:
                return
            self.evaluate(*move)

    def propose(self) -> tuple[int, int, list[int], list[int], torch.Tensor] | None:
        """The move of the largest estimated drop among the ``PAIRS_PER_PROPOSAL`` open pairs of
        the most different residuals; None when no open pair has a move that lowers the estimate."""
        resid, batches = self.part.residuals(), self.part.batches
        k, first = len(batches), max(1, self.m // FIRST_BLOCK)
        spread = torch.cdist(resid, resid)
        pairs = sorted(((float(spread[a, b]), a, b) for a in range(k) for b in range(a + 1, k)
                        if self.t_max.get((a, b), first) > 0), reverse=True)
        while pairs:
            best = None
            for _, a, b in pairs[:PAIRS_PER_PROPOSAL]:
                sa, sb = (self.alpha * self.samples[batches[c]] for c in (a, b))
                rows, cols, change, delta = greedy_block(sa, sb, resid[a], resid[b], self.m,
                                                         self.t_max.get((a, b), first))
                if not rows:
                    self.t_max[(a, b)] = 0
                elif best is None or change < best[0]:
                    best = (change, (a, b, rows, cols, delta / self.alpha))
            if best is not None:
                return best[1]
            pairs = pairs[PAIRS_PER_PROPOSAL:]
        return None

    def evaluate(self, a: int, b: int, rows: list[int], cols: list[int], delta: torch.Tensor) -> None:
        """Swap, recompute both batches in train mode, keep the swap if the mean D dropped."""
        old_a, old_b = self.part.batches[a], self.part.batches[b]
        new_a, new_b = old_a.copy(), old_b.copy()
        new_a[rows], new_b[cols] = old_b[cols], old_a[rows]
        accepted, actual = self.part.try_swap(a, b, new_a, new_b)
        self.record.proposed += 1
        predicted = torch.cat([delta, -delta])
        self.fit[0] += float(predicted @ actual)
        self.fit[1] += float(predicted @ predicted)
        if accepted:
            self.record.accepted += 1
            self.t_max = {p: t for p, t in self.t_max.items() if a not in p and b not in p}
        else:
            self.t_max[(a, b)] = len(rows) // 2


def search_batches(ev: BatchEvaluator, starts: dict[str, np.ndarray], samples: torch.Tensor, batch_size: int,
                   num_batches: int, reference: torch.Tensor) -> tuple[np.ndarray, np.ndarray, SearchRecord]:
    """``(index [N], D [K], record)``: the best start, improved by local search within ``ev``'s budget.
    At most 1 / ``START_SHARE`` of the budget goes to the starts (at least one start is evaluated);
    ``reference``: the reference (random) probe's full gradient nabla_e, the target."""
    t0 = time.perf_counter()
    k, m = num_batches, batch_size
    record = SearchRecord()
    max_starts = max(1, min(len(starts), ev.limit // (START_SHARE * k)))
    record.start, index, part = best_start(ev, starts, k, m, max_starts, reference)
    record.d_before = float(part.d.mean())
    LocalSearch(part, samples, record).run()
    index = np.concatenate([part.batches.reshape(-1), index[k * m:]])
    record.d_after = float(part.d.mean())
    record.d_own = float(part.own_distances().mean())
    record.evals, record.seconds = ev.count, time.perf_counter() - t0
    return index, part.d, record
