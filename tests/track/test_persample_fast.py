"""Per-sample scores by per-layer factors (``gradlab.track.fastsample``) equal the vmap reference
(``gradlab.track.persample``) in float64: loss, |g_i|^2, <g_i, G>, the CountSketch and the orders'
keys, for the built-in models and for modules the hooks do not handle (the vmap fallback)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradlab.config import ModelConfig, config_from_dict
from gradlab.errors import ConfigError
from gradlab.models import build_model
from gradlab.models.agc import AGC
from gradlab.track.fastsample import make_plan, score_samples_fast
from gradlab.track.gradorders import SampleScorer, get_gradient_order
from gradlab.track.layout import ParamLayout
from gradlab.track.match import greedy_match
from gradlab.track.persample import score_samples
from gradlab.track.probe import FrozenModel
from gradlab.track.sketch import CountSketch


def _perturb(model: nn.Module) -> nn.Module:
    """Norm layers away from their init (running statistics, affine parameters), so every term matters."""
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        for p in m.parameters(recurse=False):
            if p.dim() == 1:
                p.data.add_(0.3 * torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.15)
    return model.double()


def _data(n: int, side: int = 16, channels: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, side, side, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 10, (n,), generator=g)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _compare(model: nn.Module, n: int, chunk: int, side: int = 16, channels: int = 3) -> dict[str, float]:
    """Max relative error of every score, fast vs vmap, same chunks, G and sketch."""
    x, y = _data(n, side, channels)
    frozen = FrozenModel(model, ParamLayout.of(model))
    full = torch.randn(frozen.layout.size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sk = CountSketch(frozen.layout.size, 32, torch.device("cpu"), seed=3)  # every coordinate hashed alone
    kron = CountSketch(frozen.layout.size, 32, torch.device("cpu"), seed=3, shapes=frozen.layout.shapes)
    chunks = [(x[i:i + chunk], y[i:i + chunk]) for i in range(0, n, chunk)]
    ref = score_samples(frozen, chunks, full, sk)
    plan = make_plan(frozen, x[:2], y[:2])
    fast = score_samples_fast(frozen, plan, chunks, full, sk)
    nosk = score_samples_fast(frozen, plan, chunks, full, None)
    gram = score_samples_fast(frozen, plan, chunks, None, None)  # |g_i|^2 alone: the Gram form where cheaper
    fast_kron = score_samples_fast(frozen, plan, chunks, full, kron)  # sketched from the factors where cheaper
    ref_kron = score_samples(frozen, chunks, None, kron)
    out = {"loss": _rel(fast.loss, ref.loss), "sq_norm": _rel(fast.sq_norm, ref.sq_norm),
           "dot": _rel(fast.dot, ref.dot), "sketch": _rel(fast.sketch, ref.sketch),
           "dot_nosketch": _rel(nosk.dot, ref.dot), "sq_norm_gram": _rel(gram.sq_norm, ref.sq_norm),
           "sketch_kron": _rel(fast_kron.sketch, ref_kron.sketch)}
    target = kron.rows(full.float()[None])[0]  # match's batches, as Match.arrange builds them
    same = [np.array_equal(greedy_match(a.sketch, target, 2, n // 2)[0], greedy_match(b.sketch, target, 2, n // 2)[0])
            for a, b in ((fast_kron, ref_kron), (fast, ref))]
    out["match_index_differs"] = float(not all(same))
    g = float(full.norm())
    for order in ("loss", "gradnorm", "align", "proj"):
        o = get_gradient_order(order)
        out[f"key_{order}"] = _rel(o.key(fast, g), o.key(ref, g))
    assert model.training and not any(m._forward_hooks for m in model.modules()), "model left changed"
    return out


def _check(errs: dict[str, float], tol: float = 1e-5) -> None:
    """Every score within ``tol``; the CountSketch within 1e-4, as both paths accumulate it in float32."""
    print(" ".join(f"{k}={v:.1e}" for k, v in errs.items()))
    bad = {k: v for k, v in errs.items() if not v <= (1e-4 if k.startswith("sketch") else tol)}
    assert not bad, bad


@pytest.mark.parametrize("norm", ["bn", "agc", "none"])
def test_smallcnn_fast_equals_vmap(norm):
    torch.manual_seed(0)
    _check(_compare(_perturb(build_model(ModelConfig(name="smallcnn", norm=norm))), 7, 3))


def test_resnet18_fast_equals_vmap():
    torch.manual_seed(0)
    _check(_compare(_perturb(build_model(ModelConfig(name="resnet18"))), 3, 2, side=8))


class _Scale(nn.Module):
    """A module type the hooks do not handle: its parameter goes to the vmap fallback."""

    def __init__(self, c: int):
        super().__init__()
        self.s = nn.Parameter(torch.linspace(0.5, 1.5, c))

    def forward(self, x):
        return x * self.s.view(1, -1, 1, 1)


class _Mixed(nn.Module):
    """Grouped, strided, dilated and biased convolutions, GroupNorm, LayerNorm, a Linear on a sequence,
    a module called twice, a fallback module and AGC whose input is then changed in place."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 16, 3, stride=2, padding=1, bias=True)  # 2 T^2 < p d: the Gram form
        self.gn = nn.GroupNorm(2, 16)
        self.c2 = nn.Conv2d(16, 8, 3, padding=2, dilation=2, groups=4, bias=True)
        self.scale = _Scale(8)
        self.agc = AGC(8)
        self.twice = nn.Conv2d(8, 8, 1, bias=False)
        self.ln = nn.LayerNorm(8)
        self.seq = nn.Linear(8, 6)
        self.head = nn.Linear(6 * 16, 10)

    def forward(self, x):
        h = self.scale(self.c2(self.gn(self.c1(x))))
        a = self.agc(h)
        h = h.relu_()  # AGC's input changed in place after AGC ran
        h = self.twice(self.twice(a + h))
        s = self.seq(self.ln(h.flatten(2).transpose(1, 2)))  # [c, 16 positions, 6]
        return self.head(s.flatten(1))


def test_unhandled_modules_fall_back_to_vmap_and_agree():
    torch.manual_seed(0)
    model = _perturb(_Mixed())
    x, y = _data(2, side=8, channels=4)
    plan = make_plan(FrozenModel(model, ParamLayout.of(model)), x, y)
    assert set(plan.fallback) == {"scale.s", "agc.lambda", "agc.gamma", "agc.beta", "twice.weight"}, plan.fallback
    assert {s.method for s in plan.specs.values() if s.kind in ("conv", "linear")} == {"mat", "ghost"}
    _check(_compare(model, 5, 2, side=8, channels=4))


def test_batch_statistics_in_eval_mode_use_the_vmap_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(),
                          nn.LazyLinear(10))
    model(torch.randn(2, 3, 8, 8))
    x, y = _data(2, side=8)
    x = x.float()
    frozen = FrozenModel(model, ParamLayout.of(model))
    assert make_plan(frozen, x, y).batch_dependent

    from gradlab.data.datasets import BatchLoader, ImageSet

    xs, ys = _data(6, side=8)
    data = ImageSet("t", (xs * 40 + 128).clamp(0, 255).to(torch.uint8), ys, tuple(str(i) for i in range(10)))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fast = SampleScorer(BatchLoader(data, torch.device("cpu"), 3)).scores(frozen, None)
    assert any("vmap path" in str(m.message) for m in w)
    ref = SampleScorer(BatchLoader(data, torch.device("cpu"), 3), per_sample="vmap").scores(frozen, None)
    np.testing.assert_allclose(fast.sq_norm, ref.sq_norm, rtol=1e-6)


def test_dpn92_chunk_follows_activations_not_parameters():
    """34.2M parameters: the vmap path fits 0 images in 256 MB (chunk 1); the fast path's per-image work
    is its largest unfolded input (layer1's grouped 3x3 convolution, 3.4 MB), so at least 64 fit."""
    model = build_model(ModelConfig(name="dpn92"))
    x, y = _data(2, side=32)
    plan = make_plan(FrozenModel(model, ParamLayout.of(model)), x.float(), y)
    assert not plan.fallback and not plan.batch_dependent
    assert plan.state_bytes < 4 << 20
    assert plan.chunk_size(256 << 20, 128) >= 64
    assert plan.chunk_size(256 << 20, 32) == 32  # never more than a probe batch


def test_config_selects_the_path():
    assert config_from_dict({}).track.per_sample == "fast"
    assert config_from_dict({"track": {"per_sample": "vmap"}}).track.per_sample == "vmap"
    with pytest.raises(ConfigError):
        config_from_dict({"track": {"per_sample": "ghost"}})


def test_float32_fast_scores_match_vmap():
    """The default dtype: agreement at float32 rounding."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="smallcnn"))
    x, y = _data(6)
    x = x.float()
    frozen = FrozenModel(model, ParamLayout.of(model))
    full = torch.randn(frozen.layout.size, dtype=torch.float64)
    ref = score_samples(frozen, [(x, y)], full)
    fast = score_samples_fast(frozen, make_plan(frozen, x, y), [(x[:4], y[:4]), (x[4:], y[4:])], full)
    assert _rel(fast.sq_norm, ref.sq_norm) < 1e-4 and _rel(fast.dot, ref.dot) < 1e-4
    assert _rel(fast.loss, F.cross_entropy(model.eval()(x), y, reduction="none").detach().numpy()) < 1e-5


def test_tensor_product_sketch_of_factors_equals_the_formed_gradient():
    """``add_outer`` (FFT of the row and column sketches) equals hashing the formed B A^T, grouped too;
    and the tensor-product hash keeps inner products unbiased."""
    g = torch.Generator().manual_seed(0)
    shapes = [(5,), (12, 3, 3, 3), (8, 2), (12, 1, 3, 3)]
    size = sum(int(np.prod(s)) for s in shapes)
    sk = CountSketch(size, 16, torch.device("cpu"), seed=1, shapes=shapes)
    assert set(sk.factors) == {5, 5 + 324, 5 + 324 + 16}
    for offset, groups, p, d in ((5, 1, 12, 27), (5 + 324 + 16, 4, 3, 9)):
        b = torch.randn(3, groups, p, 7, generator=g, dtype=torch.float64)
        a = torch.randn(3, groups, d, 7, generator=g, dtype=torch.float64)
        formed, outer = torch.zeros(3, 16), torch.zeros(3, 16)
        sk.add_rows(formed, torch.einsum("cgpt,cgdt->cgpd", b, a).reshape(3, -1), offset)
        sk.add_outer(outer, offset, b, a)
        assert _rel(outer, formed) < 1e-5
    u, v = torch.randn(size, generator=g), torch.randn(size, generator=g)
    v = 0.5 * u + v
    est = [float(c(u) @ c(v)) for c in (CountSketch(size, 16, torch.device("cpu"), s, shapes) for s in range(400))]
    assert abs(np.mean(est) - float(u @ v)) < 4 * np.std(est) / np.sqrt(len(est))


def test_bf16_autocast_model_is_scored():
    """``train.amp = "bf16"`` (gradlab.train.accel): a layer's output gradient is bfloat16, its input
    float32. Against the float32 vmap scores of the same weights (the vmap path itself fails under
    CPU autocast in eval-mode BatchNorm), at bfloat16's precision."""
    from gradlab.train.accel import accelerate

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="smallcnn"))
    x, y = _data(4)
    x = x.float()
    frozen = FrozenModel(model, ParamLayout.of(model))
    full = torch.randn(frozen.layout.size, dtype=torch.float64)
    ref = score_samples(frozen, [(x, y)], full)
    accelerate(model, "bf16")
    fast = score_samples_fast(frozen, make_plan(frozen, x, y), [(x, y)], full)
    assert _rel(fast.sq_norm, ref.sq_norm) < 0.05 and _rel(fast.dot, ref.dot) < 0.05
