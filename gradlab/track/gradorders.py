"""Gradient-informed orders: the training set sorted by per-sample gradients at theta_e.

They are the reference points between which the image metrics sit: how close to the full
gradient can a batch get when its images are chosen by their gradients? Each order is
recomputed at every epoch's theta_e (``GradientProbe.prepare``), so its ``index`` and
``batch_score`` are stored per epoch (``[E, N]`` and ``[E, K]``).

Per-image keys (ascending; in eval mode, from ``gradlab.track.fastsample``'s per-layer factors, or
``gradlab.track.persample``'s per-sample gradients with ``per_sample = "vmap"``):

- ``loss``: the image's loss;
- ``gradnorm``: |g_i|;
- ``align``: cos(g_i, G), the cosine to the full gradient G = nabla_e;
- ``proj``: <g_i, G> / |G|, the length of g_i along G;
- ``match``: not a sort: batches built greedily so that each batch's mean gradient is close
  to G (``gradlab.track.match``);
- ``search``: not a sort: batches found by local search on the real train-mode D_k = |g_k - G|
  (``gradlab.track.search``), the one order whose objective is what the tracker stores.

G for ``align``, ``proj``, ``match`` and ``search`` is the full gradient of this epoch's ``random`` probe
pass (train mode, batch-size-weighted mean of its batch gradients, exactly the G every D of
the epoch is measured against), so it costs nothing extra; the tracker runs that pass first.
"""
from __future__ import annotations

import warnings
import weakref
from typing import Iterator, Sequence

import numpy as np
import torch

from gradlab import registry
from gradlab.data.datasets import BatchLoader
from gradlab.data.orders import batch_means, class_labels, cut as cut_index
from gradlab.data.probes import ProbeBatches
from gradlab.errors import ConfigError
from gradlab.track.fastsample import FastPlan, make_plan, score_samples_fast
from gradlab.track.ghost import KINDS
from gradlab.track.match import greedy_match
from gradlab.track.persample import SampleScores, chunk_size, score_samples
from gradlab.track.probe import FrozenModel
from gradlab.track.search import STARTS, BatchEvaluator, SearchRecord, search_batches, start_orders
from gradlab.track.sketch import CountSketch

DEFAULT_SEARCH_PASSES = 10  # track.search_passes
KIND_NAMES = ", ".join(sorted({t.__name__ for t in KINDS}))

# Written to every gradient probe's group as the attribute ``score_mode``.
SEARCH_MODE = ("starts scored per sample in eval mode; batches chosen by their real train-mode gradients at "
               "theta_e (BatchNorm on each batch's own statistics)")
SCORE_MODE = ("per-sample gradients at theta_e in eval mode (BatchNorm uses theta_e's running statistics; "
              "exact per-sample gradients for models without batch statistics)")


class GradientOrder:
    """One order from per-sample scores at theta_e. A sorting order gives each image a ``key``
    (ascending) and is cut like any sorted order; an order that builds its batches (trait
    ``builds`` in ``gradlab.registry.GRADIENT_ORDERS``) overrides ``arrange``. What an order
    needs (the full gradient G) and how it may be cut come from its registry entry; a user's
    order named by an import path declares them as class attributes ``needs_full = True`` and
    ``builds = True``.

    ``key(s, full_norm)`` may use the fields of ``s`` (``gradlab.track.persample.SampleScores``,
    one entry per image, in dataset order): ``s.loss`` (the image's loss at theta_e, eval mode),
    ``s.sq_norm`` and ``s.gradnorm`` (|g_i|^2, |g_i|), and, when the order needs G (``needs_full``),
    ``s.dot`` (<g_i, G>) with ``s.align(full_norm)`` and ``s.proj(full_norm)``. G is nabla_e, the full
    gradient of this epoch's ``random`` probe pass (train mode); ``full_norm`` is |G| (0.0 without G). ``s.sketch`` (a
    CountSketch of each g_i) exists only for an order with ``needs_sketch = True``.

        >>> import numpy as np
        >>> class LossDescending(GradientOrder):
        ...     name, label = "loss_desc", "loss at theta_e, descending"
        ...     def key(self, s, full_norm):
        ...         return -s.loss
        >>> class S:  # a stand-in for SampleScores: three images' losses
        ...     loss = np.array([0.5, 2.0, 1.0])
        >>> np.argsort(LossDescending().key(S(), 0.0), kind="stable").tolist()
        [1, 2, 0]
    """

    concept = "gradient order"  # what an import path must name (gradlab.registry.GRADIENT_ORDERS)
    name = ""
    label = ""  # what batch_score is, for axes and the run file's score_label
    needs_sketch = False  # needs a CountSketch S g_i of every image
    search_passes = DEFAULT_SEARCH_PASSES  # the cost bound of an order that searches (``search``), in probe passes

    @property
    def needs_full(self) -> bool:
        return registry.NEEDS_FULL in registry.GRADIENT_ORDERS.traits(self.name)

    @property
    def cuts(self) -> tuple[str, ...]:
        """How it may be cut into batches: one way (its own) when it builds them."""
        builds = registry.BUILDS in registry.GRADIENT_ORDERS.traits(self.name)
        return ("contiguous",) if builds else registry.BATCHINGS.names()

    def key(self, s: SampleScores, full_norm: float) -> np.ndarray:
        raise NotImplementedError

    def arrange(self, s: SampleScores, full: torch.Tensor | None, scorer: "SampleScorer", batch_size: int,
                num_batches: int, batching: str, labels: np.ndarray | None = None,
                frozen: FrozenModel | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(index [N], batch_score [K])``: the images sorted by ``key``, cut by ``batching``
        (``labels``: the class of every image, for the ``class`` cut; ``frozen``: theta_e, for an
        order that evaluates batches itself)."""
        key = self.key(s, float(full.norm()) if full is not None else 0.0)
        index = cut_index(batching, np.argsort(key, kind="stable").astype(np.int64), batch_size, labels)
        return index, batch_means(key, index, batch_size)


class Loss(GradientOrder):
    name, label = "loss", "loss at theta_e (eval mode)"

    def key(self, s, full_norm):
        return s.loss


class GradNorm(GradientOrder):
    name, label = "gradnorm", "per-sample gradient norm |g_i|"

    def key(self, s, full_norm):
        return s.gradnorm


class Align(GradientOrder):
    name, label = "align", "cos(g_i, full gradient)"

    def key(self, s, full_norm):
        return s.align(full_norm)


class Proj(GradientOrder):
    name, label = "proj", "projection of g_i on the full gradient"

    def key(self, s, full_norm):
        return s.proj(full_norm)


class Match(GradientOrder):
    """Batches are built, not cut (greedy gradient matching, ``gradlab.track.match``)."""

    name, label, needs_sketch = "match", "sketched |mean g_i - G| of the batch (greedy match)", True

    def arrange(self, s, full, scorer, batch_size, num_batches, batching, labels=None, frozen=None):
        target = scorer.sketch(full.numel(), s.sketch.device).rows(full.to(torch.float32)[None])[0]
        return greedy_match(s.sketch, target, batch_size, num_batches)


class Search(GradientOrder):
    """Batches found by local search on the real train-mode D (``gradlab.track.search``): the best of
    a few class-balanced starts, then swaps between batches accepted only when the real D drops.
    ``batch_score`` is each batch's real |g_k - nabla_e| at theta_e; ``record`` the epoch's ``SearchRecord``."""

    name, label, needs_sketch = "search", "|g_k - nabla_e| of the batch in train mode at theta_e (search)", True

    def __init__(self) -> None:
        self.record = SearchRecord()
        self.epochs = 0  # arrange calls so far: a new random start per epoch

    def arrange(self, s, full, scorer, batch_size, num_batches, batching, labels=None, frozen=None):
        if frozen is None:
            raise ValueError("search: arrange needs theta_e (frozen) to evaluate batches")
        data = scorer.loader.data
        labels = class_labels(data.labels, 'probe "search"') if labels is None else labels
        keys = {"intensity": None if data.images is None else
                data.images.reshape(len(data), -1).sum(1, dtype=torch.float64).cpu().numpy(),
                "proj": s.proj(float(full.norm())), "loss": s.loss}
        rng = np.random.default_rng((scorer.seed, 0x5EA, self.epochs))
        self.epochs += 1
        starts = start_orders(len(data), labels, batch_size, keys, rng)
        sketch = scorer.sketch(full.numel(), s.sketch.device)
        ev = BatchEvaluator(frozen, scorer.loader, sketch, self.search_passes * num_batches)
        index, d, self.record = search_batches(ev, starts, s.sketch, batch_size, num_batches, full)
        return index, d


def get_gradient_order(name: str) -> GradientOrder:
    """A fresh instance of gradient order ``name`` (gradlab's, a plugin's or an import path),
    named as it was asked for."""
    order = registry.GRADIENT_ORDERS.load(name)()
    if order.name != name:
        order.name = name
    return order


class SampleScorer:
    """One scoring pass per epoch over every image of a loader, shared by the gradient probes
    that use it (the pass runs once at each theta_e, whatever the number of orders).

    ``per_sample``: ``"fast"`` (per-layer factors of one forward/backward per chunk,
    ``gradlab.track.fastsample``; chunks of at most the loader's batch size) or ``"vmap"`` (the
    reference: per-sample gradients by ``torch.func``, ``gradlab.track.persample``). Both give
    the same scores; ``max_bytes`` bounds the per-sample work held at once in either."""

    def __init__(self, loader: BatchLoader, max_bytes: int = 256 << 20, sketch_dim: int = 256, seed: int = 0,
                 per_sample: str = "fast"):
        if per_sample not in ("fast", "vmap"):
            raise ConfigError(f'per_sample must be "fast" or "vmap", got {per_sample!r}')
        self.loader, self.max_bytes, self.sketch_dim, self.seed = loader, int(max_bytes), int(sketch_dim), seed
        self.per_sample = per_sample
        self._plan: tuple[weakref.ref, FastPlan] | None = None  # (the model it was made for, plan)
        self.needs_sketch = False  # set by the probes that use this scorer
        self._sketch: CountSketch | None = None
        # (weak reference to the theta_e it was computed at, scores): a weak reference, not id(),
        # because a new epoch's FrozenModel may be allocated at the freed address of the last one
        self._memo: tuple[weakref.ref, SampleScores] | None = None

    def _chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.loader.data)
        for lo in range(0, n, size):
            yield self.loader.get(torch.arange(lo, min(n, lo + size)))

    def sketch(self, num_params: int, device: torch.device, shapes=None) -> CountSketch:
        """The CountSketch of ``match`` (made once; ``shapes``, the layout's, hash each weight as a tensor
        product, so that the fast path sketches a Gram-form layer from its factors)."""
        if self._sketch is None:
            self._sketch = CountSketch(num_params, self.sketch_dim, device, seed=self.seed + 0x3A7C, shapes=shapes)
        return self._sketch

    def scores(self, frozen: FrozenModel, full: torch.Tensor | None) -> SampleScores:
        """Every image's scores at ``frozen`` (computed once per theta_e)."""
        if self._memo is not None and self._memo[0]() is frozen and (full is None or self._memo[1].dot is not None):
            return self._memo[1]
        device = next(iter(frozen.params.values())).device
        sk = self.sketch(frozen.layout.size, device, frozen.layout.shapes) if self.needs_sketch else None
        plan = self.plan(frozen) if self.per_sample == "fast" else None
        if plan is not None and not plan.batch_dependent:
            size = plan.chunk_size(self.max_bytes, self.loader.batch_size)
            s = score_samples_fast(frozen, plan, self._chunks(size), full, sk, self.max_bytes)
        else:
            s = score_samples(frozen, self._chunks(chunk_size(frozen.layout.size, self.max_bytes)), full, sk)
        self._memo = (weakref.ref(frozen), s)
        return s

    def plan(self, frozen: FrozenModel) -> FastPlan:
        """The fast path's plan for this model (made once, from the loader's first two images)."""
        if self._plan is None or self._plan[0]() is not frozen.model:
            x, y = self.loader.get(torch.arange(min(2, len(self.loader.data))))
            plan = make_plan(frozen, x, y)
            if plan.batch_dependent:
                warnings.warn("per-sample scores: the model's eval-mode output for an image depends on the other "
                              "images of its batch; scoring with the vmap path (each image alone)", stacklevel=2)
            elif plan.fallback:
                warnings.warn(f"per-sample scores: {len(plan.fallback)} parameter tensors (of {plan.fallback[0]!r}, "
                              f"...) belong to modules the fast path does not handle and are scored by the vmap "
                              f"path; {'; '.join(plan.notes) or 'module types other than ' + KIND_NAMES}",
                              stacklevel=2)
            self._plan = (weakref.ref(frozen.model), plan)
        return self._plan[1]


class GradientProbe(ProbeBatches):
    """A gradient-informed order cut into batches, rebuilt at each epoch's theta_e (``prepare``)."""

    per_epoch = True

    def __init__(self, order: str, batching: str, scorer: SampleScorer,
                 search_passes: int = DEFAULT_SEARCH_PASSES):
        if search_passes < 1:
            raise ConfigError(f"search_passes must be >= 1, got {search_passes}")
        self.order = get_gradient_order(order)
        self.order.search_passes = int(search_passes)
        if batching not in self.order.cuts:
            raise ConfigError(f"order {order!r} cannot be cut {batching!r}; it supports {', '.join(self.order.cuts)}")
        self.batching, self.scorer = batching, scorer
        self.name = registry.probe_name(order, batching)
        self.needs_full = self.order.needs_full
        scorer.needs_sketch |= self.order.needs_sketch
        loader = scorer.loader
        self.batch_size, self.num_batches = loader.batch_size, len(loader)
        if self.num_batches < 1:
            raise ConfigError(f"probe {self.name!r}: {len(loader.data)} images make no batch of {self.batch_size}")
        self.score_label = self.order.label
        self.attrs = {"batching": batching, "order_kind": "gradient", "score_mode": SCORE_MODE}
        if isinstance(self.order, Search):
            self.attrs = {**self.attrs, "score_mode": SEARCH_MODE, "search_passes": self.order.search_passes,
                          "search_starts": list(STARTS)}
        # the class of every image, for the cuts that read labels (class): refused here for masks
        self.labels = (class_labels(loader.data.labels, f'probe "{self.name}"')
                       if registry.LABELS in registry.BATCHINGS[batching].traits else None)
        self.preprocessing = loader.data.preprocessing()
        self.index = np.zeros(0, dtype=np.int64)
        self.batch_score = np.zeros(self.num_batches)
        self._idx: list[torch.Tensor] = []

    def prepare(self, frozen: FrozenModel, full: torch.Tensor | None) -> None:
        """Score every image at theta_e and rebuild this epoch's order and batch scores."""
        if self.needs_full and full is None:
            registry.check_reference([self.name], [])
        s = self.scorer.scores(frozen, full)
        self.index, self.batch_score = self.order.arrange(s, full, self.scorer, self.batch_size, self.num_batches,
                                                          self.batching, self.labels, frozen)
        self._idx = self.scorer.loader.batch_indices(torch.from_numpy(self.index))

    def epoch_record(self) -> dict[str, float]:
        """How this epoch's order was built, for the orders that record it (``search``: its cost,
        moves and mean D before and after; ``gradlab.track.search.SearchRecord``)."""
        return self.order.record.row() if isinstance(self.order, Search) else {}

    def batches(self, ks: Sequence[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self._idx:
            raise RuntimeError(f"probe {self.name!r}: prepare() at theta_e before reading its batches")
        for k in range(self.num_batches) if ks is None else ks:
            yield self.scorer.loader.get(self._idx[k])


def gradient_probes(loader: BatchLoader, orders: Sequence[str], batchings: Sequence[str] = ("contiguous",),
                    max_bytes: int = 256 << 20, sketch_dim: int = 256, seed: int = 0,
                    per_sample: str = "fast", search_passes: int = DEFAULT_SEARCH_PASSES) -> dict[str, GradientProbe]:
    """Probes of every gradient ``order`` x each batching it supports, sharing one scoring pass
    (``search_passes``: the cost bound of ``search``, in probe passes per epoch)."""
    scorer = SampleScorer(loader, max_bytes, sketch_dim, seed, per_sample)
    out: dict[str, GradientProbe] = {}
    for order in orders:
        for cut in batchings:
            if cut in get_gradient_order(order).cuts:
                p = GradientProbe(order, cut, scorer, search_passes)
                out[p.name] = p
    return out
