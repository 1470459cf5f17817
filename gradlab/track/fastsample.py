"""Per-sample scores without per-sample gradients: one forward and one backward per chunk.

``track.per_sample = "fast"`` (the default; ``"vmap"`` is the reference,
``gradlab.track.persample``). In eval mode every image's output depends on that image alone,
so one backward of the *summed* per-sample losses gives each hooked layer the output
gradient b_i of every image at once, and the layer's per-sample gradient is a function of
its input x_i and b_i (Goodfellow 2015; Opacus's ``GradSampleModule`` and BackPACK capture
the same pair with module hooks). ``gradlab.track.ghost`` reduces each layer's pair to
|g_i|^2, <g_i, G> and S g_i as the backward reaches it, and drops it; the loss comes from
the same forward. Nothing of size N x P or c x P exists.

Handled: ``nn.Linear``, ``nn.Conv2d`` (zero padding), ``nn.BatchNorm1d/2d`` with running
statistics, ``nn.GroupNorm``, ``nn.LayerNorm`` and ``gradlab.models.agc.AGC`` (exact types).
The parameters of any other module, of a module called more than once per forward, of a
shared parameter, or of a module whose input is changed in place, are scored by the vmap
path for just those tensors (``FastPlan.fallback``). A model whose eval-mode output for an
image depends on the other images of the batch (BatchNorm without running statistics) is
scored by the vmap path entirely (``FastPlan.batch_dependent``).

Memory follows activations, not P: a chunk holds the activations of its forward/backward
(as a probe batch of the same size does) plus one layer's per-sample work at a time;
``FastPlan.chunk_size`` bounds the latter by ``track.per_sample_mb`` and never exceeds the
probe batch size.

Why not forward-mode AD for <g_i, G>: ``torch.func.jvp`` of the per-sample losses in the
direction G gives it for every image, but costs about one forward *and* backward (measured
2.8x a forward for resnet18 on CPU, ``benchmarks/per_sample_cost.py``), while <g_i, G_W>
from a layer's factors costs at most one more product per layer in the backward we already run.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.func import functional_call, vmap

from gradlab.track.ghost import KINDS, LayerSpec, Sink, linear_op, norm_op
from gradlab.track.persample import SampleScores, chunk_size as vmap_chunk_size, eval_mode, per_sample_grads
from gradlab.track.probe import FrozenModel
from gradlab.track.sketch import CountSketch


@dataclass
class FastPlan:
    """How one model's per-sample scores are taken: per hooked module, and what falls back to vmap."""

    specs: dict[str, LayerSpec]  # hooked module name -> its per-sample work
    fallback: tuple[str, ...]  # parameter tensors scored by the vmap path
    batch_dependent: bool = False  # eval-mode outputs depend on the batch: the vmap path scores everything
    itemsize: int = 4
    notes: list[str] = field(default_factory=list)  # why modules fell back

    @property
    def state_bytes(self) -> int:
        """Bytes per image of the largest layer's per-sample work (unfolded input and Gram matrices or
        formed gradient): the scoring pass's own memory on top of the chunk's activations."""
        return max((s.state for s in self.specs.values()), default=1) * self.itemsize

    def chunk_size(self, max_bytes: int, cap: int) -> int:
        """Images per forward/backward: the per-sample work of one layer within ``max_bytes``, and no more
        images than ``cap`` (the probe batch size, whose activations a probe pass holds anyway)."""
        return max(1, min(int(cap), int(max_bytes) // max(1, self.state_bytes)))


def per_sample_loss(frozen: FrozenModel, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each image's ``loss_fn`` (a batch-mean loss), as the vmap path computes it: [c]."""
    return vmap(lambda o, t: frozen.loss_fn(o.unsqueeze(0), t.unsqueeze(0)))(out, y)


def _theta(frozen: FrozenModel) -> dict[str, torch.Tensor]:
    return {**{n: p.detach() for n, p in frozen.params.items()}, **frozen.consts, **frozen.buffers}


def _candidates(frozen: FrozenModel, notes: list[str]) -> tuple[dict[str, LayerSpec], bool]:
    """Modules of a handled type that own trainable parameters no other module shares."""
    owners: dict[int, int] = {}
    for m in frozen.model.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    trainable, specs, dependent = set(frozen.layout.names), {}, False
    for name, m in frozen.model.named_modules():
        kind = KINDS.get(type(m))
        if kind == "bn" and m.running_mean is None:
            dependent = True  # normalises with the batch's statistics even in eval mode
        own = {pn: f"{name}.{pn}" if name else pn for pn, _ in m.named_parameters(recurse=False)}
        own = {pn: full for pn, full in own.items() if full in trainable}
        if kind is None or not own:
            continue
        if any(owners[id(p)] > 1 for p in m.parameters(recurse=False)):
            notes.append(f"{name}: shares a parameter")
        elif kind == "conv" and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            notes.append(f"{name}: padding {m.padding!r} / {m.padding_mode}")
        else:
            specs[name] = LayerSpec(name, kind, own)
    return specs, dependent


def _shape_pass(frozen: FrozenModel, specs: dict[str, LayerSpec], x: torch.Tensor, y: torch.Tensor,
                notes: list[str]) -> dict[str, tuple]:
    """One image forward and backward with recording hooks: each module's calls, shapes, and whether
    its input survives unchanged until its output gradient arrives."""
    mods = dict(frozen.model.named_modules())
    seen: dict[str, list] = {n: [] for n in specs}

    def fwd(name):
        def hook(mod, args, out):
            rec = [args[0].shape, out.shape, out.requires_grad, args[0]._version, True]
            seen[name].append(rec)
            if out.requires_grad:
                inp = args[0]
                out.register_hook(lambda b: rec.__setitem__(4, inp._version == rec[3]))
        return hook

    handles = [mods[n].register_forward_hook(fwd(n)) for n in specs]
    try:
        xr = x[:1].detach().requires_grad_(True)
        loss = per_sample_loss(frozen, functional_call(frozen.model, _theta(frozen), (xr,)), y[:1])
        torch.autograd.grad(loss.sum(), xr)
    finally:
        for h in handles:
            h.remove()
    shapes = {}
    for n, recs in seen.items():
        if not recs:
            shapes[n] = None  # never called: a zero gradient, nothing to add
        elif len(recs) == 1 and recs[0][2] and recs[0][4]:
            shapes[n] = recs[0]
        else:
            notes.append(f"{n}: called {len(recs)} times, or its input was changed in place, or not reached")
    return shapes


def _fill(spec: LayerSpec, mod: nn.Module, in_shape: torch.Size, out_shape: torch.Size) -> None:
    if spec.kind == "conv":
        g, (kh, kw) = mod.groups, mod.kernel_size
        spec.groups, spec.p, spec.d = g, mod.out_channels // g, mod.in_channels // g * kh * kw
        spec.t = out_shape[2] * out_shape[3]
        view = mod.kernel_size == (1, 1) and mod.stride == (1, 1) and mod.padding == (0, 0)
        spec.choose(unfold_copies=not view)
    elif spec.kind == "linear":
        spec.p, spec.d = mod.out_features, mod.in_features
        spec.t = max(1, out_shape[1:].numel() // mod.out_features)
        spec.choose(unfold_copies=len(in_shape) > 2)
    else:
        spec.state = 2 * in_shape[1:].numel()  # the normalised input and its product with b


def _independent(frozen: FrozenModel, x: torch.Tensor) -> bool:
    """Eval-mode outputs of two images together equal each alone (no batch statistics)."""
    if len(x) < 2:
        return True
    with torch.no_grad():
        theta = _theta(frozen)
        both = functional_call(frozen.model, theta, (x[:2],))
        alone = torch.cat([functional_call(frozen.model, theta, (x[i:i + 1],)) for i in range(2)])
    return bool(torch.allclose(both, alone, rtol=1e-3, atol=1e-4 * float(alone.abs().max()) + 1e-6))


def make_plan(frozen: FrozenModel, x: torch.Tensor, y: torch.Tensor) -> FastPlan:
    """The plan of ``frozen``'s model for images like ``x`` (two of them, to test independence)."""
    notes: list[str] = []
    itemsize = next(iter(frozen.params.values())).element_size()
    with eval_mode(frozen.model):
        specs, dependent = _candidates(frozen, notes)
        if dependent or not x.is_floating_point() or not _independent(frozen, x):
            return FastPlan({}, frozen.layout.names, True, itemsize, notes + ["outputs depend on the batch"])
        shapes = _shape_pass(frozen, specs, x, y, notes)
    mods = dict(frozen.model.named_modules())
    covered = {full for n, s in specs.items() if n in shapes for full in s.params.values()}
    specs = {n: s for n, s in specs.items() if shapes.get(n) is not None}
    for n, s in specs.items():
        _fill(s, mods[n], shapes[n][0], shapes[n][1])
    return FastPlan(specs, tuple(n for n in frozen.layout.names if n not in covered), False, itemsize, notes)


class _Hooks:
    """Forward hooks on the plan's modules that hand each one's (input, output gradient) to
    ``gradlab.track.ghost`` during the backward; active only inside ``run``."""

    def __init__(self, frozen: FrozenModel, plan: FastPlan, max_bytes: int):
        self.plan, self.max_bytes = plan, int(max_bytes)
        self.mods = dict(frozen.model.named_modules())
        self.values = {n: t.detach() for n, t in _theta(frozen).items()}
        self.sink: Sink | None = None
        self.calls: dict[str, int] = {}

    def _hook(self, name: str):
        spec = self.plan.specs[name]

        def hook(mod, args, out):
            if self.sink is None:
                return
            self.calls[name] = self.calls.get(name, 0) + 1
            x, sink, version = args[0].detach(), self.sink, args[0]._version
            out.register_hook(lambda b: self._on_grad(sink, spec, mod, x, version, b))
        return hook

    def _on_grad(self, sink: Sink, spec: LayerSpec, mod: nn.Module, x: torch.Tensor, version: int,
                 b: torch.Tensor) -> None:
        if x._version != version or self.calls[spec.module] != 1:
            raise RuntimeError(f"per-sample scores: module {spec.module!r} was called twice or its input changed "
                               f"in place during this forward; use track.per_sample = \"vmap\"")
        dtype = torch.promote_types(x.dtype, b.dtype)  # under autocast b may be bfloat16, x float32
        x, b = x.to(dtype), b.detach().to(dtype)
        if spec.kind in ("linear", "conv"):
            linear_op(sink, spec, mod, x, b, self.max_bytes)
        else:
            norm_op(sink, spec, mod, x, b, self.values)

    @contextlib.contextmanager
    def run(self, sink: Sink) -> Iterator[None]:
        self.sink, self.calls = sink, {}
        handles = [self.mods[n].register_forward_hook(self._hook(n)) for n in self.plan.specs]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self.sink = None


def _chunk(frozen: FrozenModel, plan: FastPlan, hooks: _Hooks, x: torch.Tensor, y: torch.Tensor,
           sink: Sink) -> torch.Tensor:
    """One chunk's losses [c]; its |g_i|^2, <g_i, G> and S g_i accumulate in ``sink``."""
    xr = x.detach().requires_grad_(True)  # the backward starts from the images, parameters stay detached
    with hooks.run(sink):
        loss = per_sample_loss(frozen, functional_call(frozen.model, hooks.values, (xr,)), y)
        torch.autograd.grad(loss.sum(), xr)
    if plan.fallback:  # modules the hooks do not handle: their tensors' per-sample gradients by vmap
        numel = dict(zip(frozen.layout.names, frozen.layout.numels))
        step = vmap_chunk_size(int(sum(numel[n] for n in plan.fallback)), hooks.max_bytes)
        for lo in range(0, len(x), step):
            rows = slice(lo, min(len(x), lo + step))
            _, grads = per_sample_grads(frozen, x[rows], y[rows], plan.fallback)
            for n in plan.fallback:
                sink.block(n, grads[n].flatten(1), rows)
    return loss.detach()


def score_samples_fast(frozen: FrozenModel, plan: FastPlan, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]],
                       full: torch.Tensor | None = None, sketch: CountSketch | None = None,
                       max_bytes: int = 256 << 20) -> SampleScores:
    """``gradlab.track.persample.score_samples`` by per-layer factors: the same scores, chunk by chunk."""
    layout = frozen.layout
    dtype = next(iter(frozen.params.values())).dtype
    pieces = None if full is None else {n: t.reshape(-1).to(dtype) for n, t in layout.unflatten(full).items()}
    offsets = {n: int(o) for n, o in zip(layout.names, layout.offsets)}
    hooks = _Hooks(frozen, plan, max_bytes)
    loss, sq, dot, sk = [], [], [], []
    with eval_mode(frozen.model):
        for x, y in chunks:
            sink = Sink(len(x), pieces, sketch, offsets, x.device)
            loss.append(_chunk(frozen, plan, hooks, x, y, sink).double().cpu())
            sq.append(sink.sq.cpu())
            if sink.dot is not None:
                dot.append(sink.dot.cpu())
            if sink.sk is not None:
                sk.append(sink.sk)
    return SampleScores(torch.cat(loss).numpy(), torch.cat(sq).numpy(),
                        torch.cat(dot).numpy() if dot else None, torch.cat(sk) if sk else None)
