from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradlab.config import ModelConfig
from gradlab.track.layout import ParamLayout
from gradlab.models import build_model
from gradlab.models.agc import AGC


def _random_agc(c: int, seed: int = 0) -> AGC:
    g = torch.Generator().manual_seed(seed)
    m = AGC(c)
    with torch.no_grad():
        m.lam.copy_(torch.randn(c, generator=g))
        m.gamma.copy_(torch.randn(c, generator=g))
        m.beta.copy_(torch.randn(c, generator=g))
    return m


def test_agc_init_is_mean_subtraction():
    m = AGC(4)
    assert torch.equal(m.lam, torch.ones(4)) and torch.equal(m.gamma, torch.ones(4))
    assert torch.equal(m.beta, torch.zeros(4))
    x = torch.randn(3, 4, 5, 6)
    torch.testing.assert_close(m(x), x - x.mean(dim=(2, 3), keepdim=True))


def test_agc_matches_direct_formula_per_sample_per_channel():
    m = _random_agc(3)
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    m = m.double()
    y = m(x).detach().numpy()
    xn = x.numpy()
    lam, gam, bet = (t.detach().numpy() for t in (m.lam, m.gamma, m.beta))
    ref = np.empty_like(xn)
    for s in range(2):  # the paper's eq. (1), one filter and one sample at a time
        for c in range(3):
            mean = xn[s, c].sum() / xn[s, c].size
            ref[s, c] = (xn[s, c] - lam[c] * mean) * gam[c] + bet[c]
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_agc_same_in_train_and_eval_and_independent_of_batch():
    m = _random_agc(5, seed=1)
    x = torch.randn(4, 5, 6, 6)
    y_train = m.train()(x)
    y_eval = m.eval()(x)
    assert torch.equal(y_train, y_eval)
    assert not list(m.buffers())  # no running statistics
    torch.testing.assert_close(m(x[1:2]), y_train[1:2])  # per sample: no batch coupling


def test_agc_gradients_match_autograd_of_formula():
    m = _random_agc(2, seed=2).double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))
    m(x).square().sum().backward()
    assert m.lam.grad is not None and m.gamma.grad is not None and m.beta.grad is not None


@pytest.mark.parametrize("name", ["smallcnn", "resnet18", "dpn26", "dpn92", "resunet"])
def test_norm_agc_replaces_every_batchnorm(name):
    classes = 2 if name == "resunet" else 10
    bn = build_model(ModelConfig(name=name, norm="bn", num_classes=classes, width=4))
    agc = build_model(ModelConfig(name=name, norm="agc", num_classes=classes, width=4))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules())
    assert n_bn > 0
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in agc.modules())
    assert sum(isinstance(m, AGC) for m in agc.modules()) == n_bn
    kinds = set(ParamLayout.of(agc).kinds)
    assert {"agc.lambda", "agc.gamma", "agc.beta"} <= kinds and not any(k.startswith("bn.") for k in kinds)


def test_agc_model_forward_is_batch_independent():
    torch.manual_seed(0)
    m = build_model(ModelConfig(name="smallcnn", norm="agc")).train()
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(m(x)[2:], m(x[2:]), rtol=1e-5, atol=1e-6)
