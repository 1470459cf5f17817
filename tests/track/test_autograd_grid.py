"""probe_pass against plain torch.autograd over a grid of problems (models x norms), as
Cockpit's tests run each quantity over their problem grid.

For every problem the reference takes each batch's mean-loss gradient at theta_e on a fresh
``copy.deepcopy`` of the model in train mode (BatchNorm on batch statistics; the running
buffers of the copy are thrown away), forms the batch-size-weighted full gradient in float64,
and compares every stored quantity.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradlab.config import ModelConfig
from gradlab.models import build_model
from gradlab.track.layout import ParamLayout
from gradlab.track.probe import FrozenModel, probe_pass
from gradlab.track.stores import make_store

MODELS = ["smallcnn", "resnet18", "dpn26", "resunet"]
NORMS = ["bn", "agc", "none"]


def _problem(name: str, norm: str):
    torch.manual_seed(0)
    seg = name == "resunet"
    cfg = ModelConfig(name=name, norm=norm, num_classes=2 if seg else 10, width=4)
    model = build_model(cfg).train()
    g = torch.Generator().manual_seed(1)
    side = 16 if seg else 32  # the classification models pool a 32x32 input down to 1x1
    m = 4 if name in ("smallcnn", "resunet") else 2  # images per batch: the big models stay cheap
    batches = []
    for _ in range(3):
        x = torch.randn(m, 3, side, side, generator=g)
        y = (torch.randint(0, 2, (m, side, side), generator=g) if seg
             else torch.randint(0, 10, (m,), generator=g))
        batches.append((x, y))
    return model, batches


def _reference(model, batches):
    grads, losses = [], []
    for x, y in batches:
        m = copy.deepcopy(model).train()
        loss = F.cross_entropy(m(x), y)
        g = torch.autograd.grad(loss, [p for p in m.parameters() if p.requires_grad])
        grads.append([t.double() for t in g])
        losses.append(loss.item())
    flat = torch.stack([torch.cat([t.reshape(-1) for t in g]) for g in grads])
    full = flat.mean(0)  # equal batch sizes
    return grads, flat, full, np.array(losses)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", MODELS)
def test_probe_pass_matches_autograd(name, norm):
    model, batches = _problem(name, norm)
    layout = ParamLayout.of(model)
    res = probe_pass(FrozenModel(model, layout), batches, len(batches), make_store("memory", "float32"),
                     ["l2", "cosine"], True)
    grads, flat, full, losses = _reference(model, batches)
    st = res.stats
    diff = flat - full
    np.testing.assert_allclose(st.distance["l2"], diff.norm(dim=1).numpy(), rtol=1e-5)
    cos = (flat @ full) / (flat.norm(dim=1) * full.norm())
    np.testing.assert_allclose(st.distance["cosine"], (1 - cos).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(st.batch_norm, flat.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(st.full_norm, float(full.norm()), rtol=1e-5)
    np.testing.assert_allclose(res.batch_loss, losses, rtol=1e-6)
    # per layer: the same tensors, in the layout's order
    full_layers = [torch.stack([g[i] for g in grads]).mean(0) for i in range(len(grads[0]))]
    want = np.array([[float((g[i] - full_layers[i]).norm()) for i in range(len(g))] for g in grads])
    np.testing.assert_allclose(st.layer_l2, want, rtol=1e-4, atol=1e-7)
