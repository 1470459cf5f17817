"""Per-sample gradient reductions of one layer from its input and its output gradient.

For a layer whose output is ``y_i = f(x_i; w)`` for each image i alone (eval mode), one
backward of the *summed* per-sample losses gives b_i = d loss_i / d y_i for every image at
once, and the per-sample gradient of the layer's parameters is a function of (x_i, b_i)
only (Goodfellow 2015, "Efficient per-example gradient computations"; the same factors
Opacus's grad samplers and BackPACK's ``BatchGrad`` / ``BatchL2Grad`` / ``BatchDotGrad``
extensions use). This module reduces those per-layer factors to |g_i|^2, <g_i, G> and a
CountSketch S g_i, layer by layer, without an [N, P] tensor.

Linear and Conv2d (``linear_op``): with A_i [G, d, T] the (unfolded) input and B_i [G, p, T]
the output gradient of each of G groups over T positions, the weight gradient is
g_i = B_i A_i^T [G, p, d]. Per layer, one of two forms (Bu et al. 2022, "Scalable and
Efficient Training of Large Convolutional Neural Networks with Differential Privacy",
mixed ghost norm; Li et al. 2022, "Large Language Models Can Be Strong Differentially
Private Learners", ghost clipping):

- ``mat``: form g_i, then |g_i|^2, <g_i, G_W> and S g_i from it (memory p d per image);
- ``ghost``: |g_i|^2 = <A_i^T A_i, B_i^T B_i> (two T x T Gram matrices, memory 2 T^2) and
  <g_i, G_W> = <B_i, G_W A_i>, never forming g_i.

``ghost`` is chosen where 2 T^2 < p d (Li et al.'s rule: it is then also the cheaper in
flops for the norm). ``match`` needs S g_i: a ``ghost`` layer gets it from its factors by FFT
when the sketch hashes its weight as a tensor product (``CountSketch(shapes=...)``, what the
scorer uses), and otherwise forms g_i in slices of images that hold at most ``max_bytes``.

Norm layers' affine parameters (BatchNorm in eval mode, GroupNorm, LayerNorm, AGC) have a
per-sample gradient of size C, formed directly from x_i and b_i.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.models.agc import AGC
from gradlab.track.sketch import CountSketch

# module type -> kind; exact types only: a subclass may compute something else in its forward
KINDS: dict[type, str] = {nn.Linear: "linear", nn.Conv2d: "conv", nn.BatchNorm1d: "bn", nn.BatchNorm2d: "bn",
                          nn.GroupNorm: "gn", nn.LayerNorm: "ln", AGC: "agc"}


class Sink:
    """One chunk's per-image sums: |g_i|^2, <g_i, G> and S g_i, added parameter tensor by tensor."""

    def __init__(self, n: int, pieces: dict[str, torch.Tensor] | None, sketch: CountSketch | None,
                 offsets: dict[str, int], device: torch.device):
        self.pieces, self.sketch, self.offsets = pieces, sketch, offsets
        self.sq = torch.zeros(n, dtype=torch.float64, device=device)
        self.dot = None if pieces is None else torch.zeros(n, dtype=torch.float64, device=device)
        self.sk = None if sketch is None else torch.zeros(n, sketch.dim, dtype=torch.float32, device=device)

    def block(self, name: str, g: torch.Tensor, rows: slice = slice(None)) -> None:
        """Per-sample gradients ``g`` [s, numel] of parameter ``name`` for images ``rows``."""
        self.sq[rows] += g.pow(2).sum(1, dtype=torch.float64)
        if self.dot is not None:
            self.dot[rows] += (g @ self.pieces[name].to(g.dtype)).double()
        if self.sk is not None:
            self.sketch.add_rows(self.sk[rows], g, self.offsets[name])

    def add(self, rows: slice, sq: torch.Tensor, dot: torch.Tensor | None) -> None:
        """|g_i|^2 and <g_i, G> of one parameter tensor, reduced elsewhere (ghost norms), for images ``rows``."""
        self.sq[rows] += sq.double()
        if self.dot is not None:
            self.dot[rows] += dot.double()


@dataclass
class LayerSpec:
    """What one hooked module's per-sample work is, from one image's forward."""

    module: str  # module name
    kind: str  # a value of KINDS
    params: dict[str, str]  # local parameter name -> layout name (trainable ones only)
    groups: int = 1
    p: int = 0  # output channels per group (linear / conv)
    d: int = 0  # inputs per group (Cin / G x kernel area)
    t: int = 1  # positions per image
    method: str = "mat"  # "mat" | "ghost" (linear / conv)
    state: int = 0  # elements this layer's per-sample work holds per image

    def choose(self, unfold_copies: bool) -> None:
        """Li et al.'s rule, and the per-image state of the form chosen (``Sink`` arrays aside)."""
        if self.kind in ("linear", "conv"):
            self.method = "ghost" if 2 * self.t * self.t < self.p * self.d else "mat"
            unfold = self.groups * self.d * self.t if unfold_copies else 0
            form = self.groups * (2 * self.t * self.t + self.p * self.t) if self.method == "ghost" else \
                self.groups * self.p * self.d
            self.state = unfold + form


def _slices(n: int, per_row: int, max_bytes: int, itemsize: int):
    step = max(1, int(max_bytes) // max(1, per_row * itemsize))
    for lo in range(0, n, step):
        yield slice(lo, min(n, lo + step))


def factors(spec: LayerSpec, mod: nn.Module, x: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [c, G, d, T], B [c, G, p, T]) of a Linear or Conv2d from its input and output gradient."""
    c, g = x.shape[0], spec.groups
    if spec.kind == "linear":
        a = x.reshape(c, -1, x.shape[-1]).transpose(1, 2)
        return a.reshape(c, 1, spec.d, -1), b.reshape(c, -1, b.shape[-1]).transpose(1, 2).reshape(c, 1, spec.p, -1)
    if mod.kernel_size == (1, 1) and mod.stride == (1, 1) and mod.padding == (0, 0):
        a = x.flatten(2)  # a 1x1 convolution's input is its own unfolding: no copy
    else:
        a = F.unfold(x, mod.kernel_size, mod.dilation, mod.padding, mod.stride)
    return a.reshape(c, g, spec.d, -1), b.reshape(c, g, spec.p, -1)


def linear_op(sink: Sink, spec: LayerSpec, mod: nn.Module, x: torch.Tensor, b: torch.Tensor, max_bytes: int) -> None:
    """Linear / Conv2d: the bias gradient is B summed over positions; the weight's by ``spec.method``."""
    wname, bname = spec.params.get("weight"), spec.params.get("bias")
    c = x.shape[0]
    if bname is not None:
        sink.block(bname, b.flatten(2).sum(2) if spec.kind == "conv" else b.reshape(c, -1, b.shape[-1]).sum(1))
    if wname is None:
        return
    size, g, t = x.element_size(), spec.groups, spec.t
    kron = sink.sk is not None and spec.method == "ghost" and _kron_cheaper(spec, sink.sketch, sink.offsets[wname])
    if spec.method == "mat" or (sink.sk is not None and not kron):
        for r in _slices(c, g * (spec.p * spec.d + spec.d * t), max_bytes, size):
            a, bb = factors(spec, mod, x[r], b[r])
            sink.block(wname, torch.einsum("cgpt,cgdt->cgpd", bb, a).reshape(a.shape[0], -1), r)
        return
    per_row = g * (2 * t * t + spec.d * t + spec.p * t) + (4 * g * sink.sketch.dim * t if kron else 0)
    for r in _slices(c, per_row, max_bytes, size):
        a, bb = factors(spec, mod, x[r], b[r])
        sq = (torch.einsum("cgdt,cgds->cgts", a, a) * torch.einsum("cgpt,cgps->cgts", bb, bb)).sum((1, 2, 3))
        dot = None
        if sink.dot is not None:
            w = sink.pieces[wname].to(a.dtype).view(g, spec.p, spec.d)
            dot = (torch.einsum("gpd,cgdt->cgpt", w, a) * bb).sum((1, 2, 3))
        sink.add(r, sq, dot)
        if kron:
            sink.sketch.add_outer(sink.sk[r], sink.offsets[wname], bb, a)


def _kron_cheaper(spec: LayerSpec, sketch: CountSketch, offset: int) -> bool:
    """Sketch a Gram-form layer from its factors by FFT (T (p + d + d' log d') per group, d' the sketch
    width) rather than forming its gradient (T p d per group)? Needs a tensor-product hash for it."""
    if offset not in sketch.factors:
        return False
    return spec.p + spec.d + sketch.dim * max(1, sketch.dim.bit_length()) < spec.p * spec.d


def norm_op(sink: Sink, spec: LayerSpec, mod: nn.Module, x: torch.Tensor, b: torch.Tensor,
            values: dict[str, torch.Tensor]) -> None:
    """BatchNorm (running statistics), GroupNorm, LayerNorm and AGC: y = f(x) * w + bias per channel
    (AGC: (x - lambda m) gamma + beta), so the weight's gradient is sum(b * f(x)) and the bias's sum(b)."""
    c, name = x.shape[0], spec.module
    get = lambda p: values[f"{name}.{p}" if name else p]  # theta_e's tensors, by layout or buffer name
    if spec.kind == "ln":
        k = len(mod.normalized_shape)
        xhat = F.layer_norm(x, mod.normalized_shape, None, None, mod.eps)
        red = lambda t: t.reshape(c, -1, *t.shape[x.dim() - k:]).sum(1).reshape(c, -1)
    else:
        red = lambda t: t.reshape(c, t.shape[1], -1).sum(2)
        if spec.kind == "bn":
            xhat = F.batch_norm(x, get("running_mean"), get("running_var"), None, None, False, 0.0, mod.eps)
        elif spec.kind == "gn":
            xhat = F.group_norm(x, mod.num_groups, None, None, mod.eps)
        else:  # AGC
            m = x.mean(dim=(2, 3))
            sb = b.sum(dim=(2, 3))
            grads = {"beta": sb, "gamma": (b * x).sum(dim=(2, 3)) - get("lambda") * m * sb,
                     "lambda": -get("gamma") * m * sb}
            for p, lname in spec.params.items():
                sink.block(lname, grads[p])
            return
    grads = {"weight": lambda: red(b * xhat), "bias": lambda: red(b)}
    for p, lname in spec.params.items():
        sink.block(lname, grads[p]())
