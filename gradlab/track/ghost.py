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
g_i = B_i A_i^T [G, p, d].

Per layer, one of two forms (Bu et al. 2022, "Scalable and Efficient Training of Large
Convolutional Neural Networks with Differential Privacy": the per-layer choice, "mixed ghost
norm"), each in slices of images that hold at most ``max_bytes``:

- ``mat`` forms g_i: for Conv2d as one convolution weight gradient with the images as groups
  (about the cost of the batch's own weight gradient, without unfolding the input; PyTorch's
  expanded weights use this form too), for Linear as sum_t b_t a_t^T; then |g_i|^2,
  <g_i, G_W> and S g_i from it at O(p d) per image.
- ``ghost`` never forms g_i: |g_i|^2 = <A_i^T A_i, B_i^T B_i>, two T x T Gram matrices per
  image (Li et al. 2022, "Large Language Models Can Be Strong Differentially Private
  Learners", ghost clipping), and <g_i, G_W> = <B_i, G_W A_i>, one product of G_W with every
  image's A.

``ghost`` is chosen where 2 T^2 < p d (Li et al.'s rule; then g_i is also the larger to hold).
S g_i for ``match``: where T (p + d) < p d and the sketch hashes the weight as a tensor product
(``CountSketch(shapes=...)``, what the scorer uses), from the factors by FFT without hashing
p d elements per image (``CountSketch.add_outer``); otherwise by hashing the formed g_i.

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

    def block(self, name: str, g: torch.Tensor, rows: slice = slice(None), sketch: bool = True) -> None:
        """Per-sample gradients ``g`` [s, numel] of parameter ``name`` for images ``rows`` (``sketch``:
        hash them into S g_i too; False when the caller sketches them from their factors)."""
        self.sq[rows] += torch.einsum("ij,ij->i", g, g).double()  # a batched dot: no [s, numel] temporary
        if self.dot is not None:
            self.dot[rows] += (g @ self.pieces[name].to(g.dtype)).double()
        if self.sk is not None and sketch:
            self.sketch.add_rows(self.sk[rows], g, self.offsets[name])

    def add(self, rows: slice, sq: torch.Tensor, dot: torch.Tensor | None) -> None:
        """|g_i|^2 and <g_i, G> of one parameter tensor, taken without forming it, for images ``rows``."""
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
    method: str = "mat"  # "mat" | "ghost": how |g_i|^2 is taken when no <g_i, G> is needed
    state: int = 0  # elements this layer's per-sample work holds per image, in its smallest slice

    def choose(self, unfold_copies: bool) -> None:
        """Li et al.'s rule for the norm-only pass, and the per-image state of the form chosen."""
        if self.kind in ("linear", "conv"):
            g, t = self.groups, self.t
            self.method = "ghost" if 2 * t * t < self.p * self.d else "mat"
            unfold = g * self.d * t if unfold_copies else 0
            self.state = unfold + g * (2 * t * t + self.p * t) if self.method == "ghost" else g * self.p * self.d

    def kron(self, sketch: CountSketch, offset: int) -> bool:
        """Sketch the weight from its factors by FFT (hashing T (p + d) elements, plus FFTs) rather than
        hashing the formed gradient (p d elements)? Needs a tensor-product hash for the tensor."""
        return offset in sketch.factors and self.t * (self.p + self.d) < self.p * self.d


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


def weight_grads(spec: LayerSpec, mod: nn.Module, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Formed per-sample weight gradients [c, numel]. Conv2d: the images as groups of one convolution's
    weight gradient (c G groups; no unfolded input, about the cost of the batch's weight gradient;
    PyTorch's expanded weights and Opacus use this form for small batches too); Linear: sum_t b_t a_t^T."""
    c = x.shape[0]
    if spec.kind == "linear":
        return torch.einsum("ctp,ctd->cpd", b.reshape(c, -1, spec.p), x.reshape(c, -1, spec.d)).reshape(c, -1)
    h, w = x.shape[2:]
    size = (c * mod.out_channels, mod.in_channels // mod.groups, *mod.kernel_size)
    gw = torch.nn.grad.conv2d_weight(x.reshape(1, -1, h, w), size, b.reshape(1, -1, *b.shape[2:]), mod.stride,
                                     mod.padding, mod.dilation, c * mod.groups)
    return gw.reshape(c, -1)


def linear_op(sink: Sink, spec: LayerSpec, mod: nn.Module, x: torch.Tensor, b: torch.Tensor, max_bytes: int) -> None:
    """Linear / Conv2d: the bias gradient is B summed over positions; the weight's by ``spec.method``, in
    slices of images within ``max_bytes``; its sketch from the factors by FFT where that is cheaper."""
    wname, bname = spec.params.get("weight"), spec.params.get("bias")
    c = x.shape[0]
    if bname is not None:
        sink.block(bname, b.flatten(2).sum(2) if spec.kind == "conv" else b.reshape(c, -1, b.shape[-1]).sum(1))
    if wname is None:
        return
    size, g, t, dim = x.element_size(), spec.groups, spec.t, 0 if sink.sk is None else sink.sketch.dim
    offset = sink.offsets[wname]
    kron = sink.sk is not None and spec.kron(sink.sketch, offset)
    if spec.method == "mat":
        for r in _slices(c, g * spec.p * spec.d + (g * t * (spec.d + 4 * dim) if kron else 0), max_bytes, size):
            sink.block(wname, weight_grads(spec, mod, x[r], b[r]), r, sketch=not kron)
            if kron:
                a, bb = factors(spec, mod, x[r], b[r])
                sink.sketch.add_outer(sink.sk[r], offset, bb, a)
        return
    for r in _slices(c, spec.state + g * spec.p * t + (4 * g * t * dim if kron else 0), max_bytes, size):
        a, bb = factors(spec, mod, x[r], b[r])
        gram_a, gram_b = torch.einsum("cgdt,cgds->cgts", a, a), torch.einsum("cgpt,cgps->cgts", bb, bb)
        dot = None
        if sink.dot is not None:  # <B_i, G_W A_i>: the layer applied with weight G_W, times B
            w = sink.pieces[wname].to(a.dtype)
            if spec.kind == "conv":
                y = F.conv2d(x[r], w.view_as(mod.weight), None, mod.stride, mod.padding, mod.dilation, mod.groups)
                dot = torch.einsum("cj,cj->c", y.flatten(1), b[r].flatten(1))
            else:
                dot = (torch.einsum("gpd,cgdt->cgpt", w.view(g, spec.p, spec.d), a) * bb).sum((1, 2, 3))
        sink.add(r, (gram_a * gram_b).sum((1, 2, 3)), dot)
        if kron:
            sink.sketch.add_outer(sink.sk[r], offset, bb, a)
        elif sink.sk is not None:  # a sketch without a tensor-product hash for this weight: hash g_i
            sink.sketch.add_rows(sink.sk[r], weight_grads(spec, mod, x[r], b[r]), offset)


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
