"""Algorithm 1 of the best-minibatch paper: batch gradients at the epoch-start parameters.

The paper keeps a second network, net_compare, that copies net_normal at each epoch start
and only runs forward/backward. Here the second network is a functional view: the live
module is called with ``torch.func.functional_call`` on a frozen snapshot theta_e of its
parameters and buffers. Nothing the probe does reaches the training model, its gradients,
its optimizer or the data RNG, so training with tracking is bit-identical to training
without.

Probe gradients are taken in training mode (BatchNorm uses the batch's own statistics),
so g_k is exactly the gradient SGD would have used for batch k at theta_e, minus the
augmentation. Running statistics are updated on a throw-away copy per batch, so theta_e's
buffers never change.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gradlab import quantities as Q
from gradlab.track.distances import ClassCounter, EpochStats, FullGradient, epoch_stats
from gradlab.track.stores import GradStore
from gradlab.track.layout import ParamLayout

if TYPE_CHECKING:
    from gradlab.track.shard import Shard as Dist

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FrozenModel:
    """theta_e: detached copies of a model's parameters and buffers at one moment."""

    def __init__(self, model: nn.Module, layout: ParamLayout, loss_fn: LossFn = F.cross_entropy):
        self.model = model
        self.layout = layout
        self.loss_fn = loss_fn  # (output, target) -> mean loss of the batch
        trainable = set(layout.names)
        named = dict(model.named_parameters())
        self.params = {n: named[n].detach().clone().requires_grad_(True) for n in layout.names}
        self.consts = {n: p.detach().clone() for n, p in named.items() if n not in trainable}
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        # each module's train/eval flag now, at the epoch start, when the model is set up to train:
        # probe passes use these flags even if the caller evaluated (model.eval()) before epoch_end
        self.modes = [(m, m.training) for m in model.modules()]

    @contextlib.contextmanager
    def training_modes(self) -> Iterator[None]:
        """The modules' train/eval flags of theta_e's moment for the block, then the current ones back."""
        now = [(m, m.training) for m in self.model.modules()]
        for m, flag in self.modes:
            m.training = flag
        try:
            yield
        finally:
            for m, flag in now:
                m.training = flag

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Mean loss (``loss_fn``, cross-entropy by default) of the batch at theta_e and its
        gradient per layout tensor."""
        return self.loss_grads_shape(x, y)[:2]

    def loss_grads_shape(self, x: torch.Tensor, y: torch.Tensor
                         ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, ...]]:
        """``loss_and_grads`` and the shape of the model's output (its classes: dimension 1; ``()``
        for an output that is not one tensor, such as a dict for a custom ``loss_fn``)."""
        scratch = {n: b.clone() for n, b in self.buffers.items()}  # BN writes running stats here
        out = functional_call(self.model, {**self.params, **self.consts, **scratch}, (x,))
        loss = self.loss_fn(out, y)
        grads = torch.autograd.grad(loss, list(self.params.values()))
        return loss.detach(), grads, tuple(out.shape) if isinstance(out, torch.Tensor) else ()

    def grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Flat float32 gradient ``[P]`` of the batch's mean loss at theta_e."""
        return self.layout.flatten(self.loss_and_grads(x, y)[1])


OWN = "own"  # probe_pass(target=OWN): the pass's own full gradient is the common target (the reference probe)


class ProbeResult:
    """One probe pass: per-batch losses at theta_e and the distance statistics."""

    def __init__(self, batch_loss: np.ndarray, stats: EpochStats, full: torch.Tensor):
        self.batch_loss = batch_loss
        self.stats = stats
        self.full = full  # float64 [P]: the full gradient G of this pass


def probe_pass(frozen: FrozenModel, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_batches: int,
               store: GradStore, measures: list[str], per_layer: bool,
               keep: Callable[[GradStore], None] | None = None, shard: Dist | None = None,
               replay: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None,
               quantities: Sequence[Q.Quantity] | None = None,
               target: torch.Tensor | str | None = None) -> ProbeResult:
    """Run every batch at theta_e into ``store``, then compute D for this epoch.

    ``target``: the common target T (float64 ``[P]``, the reference probe's full gradient at this
    theta_e) that the common-target quantities measure every g_k against; ``OWN`` for the
    reference probe's own pass (T = its G); None: no common-target quantities.

    The full gradient is accumulated on the fly, so the store is read once, sequentially,
    after the last batch. ``keep``, if given, sees the filled store before it is released
    (to save the raw gradients). A store that recomputes instead of storing
    (``store.needs_replay``) needs the same batches a second time: ``replay()`` returns
    them again, or ``batches`` itself is re-iterable (a list). ``quantities``: the ones to compute
    (``TrackOptions.active_quantities``); None: gradlab's own that ``measures``/``per_layer`` switch on.

    ``shard`` (torchrun): ``batches`` are this rank's ``shard.owned(num_batches)`` only; the
    float64 sums are all-reduced into the full gradient and the per-batch rows gathered, so
    every rank returns the stats of all ``num_batches`` batches.

    Modules run with the train/eval flags they had at theta_e's snapshot (``epoch_start``),
    so a caller that evaluated the model before ``epoch_end`` still probes in training mode.
    """
    with frozen.training_modes():
        return _probe_pass(frozen, batches, num_batches, store, measures, per_layer, keep, shard, replay, quantities,
                           target)


def _probe_pass(frozen: FrozenModel, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_batches: int,
                store: GradStore, measures: list[str], per_layer: bool, keep: Callable[[GradStore], None] | None,
                shard: Dist | None, replay: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None,
                quantities: Sequence[Q.Quantity] | None = None,
                target: torch.Tensor | str | None = None) -> ProbeResult:
    total = num_batches
    if shard is not None:
        num_batches = len(shard.owned(total))
    layout = frozen.layout
    device = next(iter(frozen.params.values())).device
    regrads = _regrads(frozen, batches, replay) if store.needs_replay else None  # fails before any work
    store.begin(num_batches, layout.size, device)
    full = FullGradient(layout.size, device)
    losses = torch.zeros(num_batches, dtype=torch.float64, device=device)
    sizes = np.zeros(num_batches, dtype=np.int64)
    labels = ClassCounter()  # each batch's targets by class (label entropy, top-class share)
    try:
        g = None
        for k, (x, y) in enumerate(batches):
            loss, grads, out_shape = frozen.loss_grads_shape(x, y)
            g = layout.flatten(grads, out=g)  # one reused [P] buffer: stores copy what they keep
            full.add(g, len(y))
            store.put(k, g)
            losses[k] = loss
            sizes[k] = len(y)
            labels.add(y, out_shape)
        if store.needs_replay:
            store.set_replay(regrads)
        gather, width = None, None
        if shard is not None:
            weight = torch.tensor([float(full.weight)], dtype=torch.float64, device=device)
            full.flush()  # pending float32 partial sum into the float64 sum
            shard.all_reduce_(full.sum, weight)
            full.weight = int(weight.item())
            gather = lambda rows: shard.gather_rows(rows, total)  # noqa: E731
            width = shard.max_int(labels.width)  # one C on every rank (a rank may hold no batch)
        mean = full.mean()
        stats = epoch_stats(store, mean, layout, sizes, measures, per_layer, gather=gather, quantities=quantities,
                            batch_loss=losses.cpu().numpy(), class_counts=labels.matrix(num_batches, width),
                            target=mean if isinstance(target, str) else target)
        if keep is not None:
            keep(store)
    finally:
        store.end()
    batch_loss = stats.reductions[Q.BATCH_LOSS]  # all K batches' (gathered in a sharded pass)
    return ProbeResult(batch_loss, stats, mean)


def _regrads(frozen: FrozenModel, batches: Iterable, replay: Callable[[], Iterable] | None
             ) -> Callable[[], Iterator[torch.Tensor]]:
    """A replay of the probe pass's gradients at theta_e, for stores that recompute."""
    if replay is None:
        if iter(batches) is batches:
            raise ValueError(f"the {type(batches).__name__} of batches can be read only once; "
                             "pass replay=lambda: <the same batches> to probe_pass")
        replay = lambda: batches  # noqa: E731

    def grads() -> Iterator[torch.Tensor]:
        for x, y in replay():
            yield frozen.grad(x, y)

    return grads
