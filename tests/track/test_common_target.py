"""The common target: every probe's batches measured against the reference probe's (random's)
full gradient at the same theta_e, checked against plain autograd (BackPACK's rule: every numeric
routine against a naive reference), with BatchNorm (where the targets differ) and without (where
the common-target D equals the own-partition D)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradlab


def _model(norm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3), *([nn.BatchNorm2d(4)] if norm else []), nn.ReLU(), nn.Flatten(),
              nn.Linear(4 * 6 * 6, 3)]
    return nn.Sequential(*layers)


def _grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m = copy.deepcopy(model).train()  # BatchNorm on the batch's own statistics; buffers thrown away
    g = torch.autograd.grad(F.cross_entropy(m(x), y), list(m.parameters()))
    return torch.cat([t.reshape(-1) for t in g]).double()


@pytest.mark.parametrize("norm", [True, False])
def test_common_target_matches_autograd(tmp_path, norm):
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(24, 1, 8, 8, generator=g), torch.randint(0, 3, (24,), generator=g)
    x[:, :, :4] += torch.linspace(-2, 2, 24).view(24, 1, 1, 1)  # a brightness that sorts the images
    model = _model(norm)
    cut = lambda idx: [(x[i], y[i]) for i in idx.split(8)]  # noqa: E731
    orders = {"sorted": x.mean(dim=(1, 2, 3)).argsort(), "random": torch.randperm(24, generator=g)}
    # "sorted" is declared first: the tracker still probes the reference ("random") first
    with gradlab.Tracker(model, tmp_path / "r.h5", probes={k: cut(v) for k, v in orders.items()},
                         param_stats="off") as tr:
        tr.epoch_start()
        tr.epoch_end(lr=0.1)
    ref = {k: torch.stack([_grad(model, x[i], y[i]) for i in v.split(8)]) for k, v in orders.items()}
    target = ref["random"].mean(0)  # the random probe's full gradient (equal batch sizes)
    with gradlab.open_run(tmp_path / "r.h5") as run:
        for name, flat in ref.items():
            common = run.quantity(name, "common_distance_l2").common_distance_l2.to_numpy()
            np.testing.assert_allclose(common, (flat - target).norm(dim=1).numpy(), rtol=1e-5)
            cos = (flat @ target) / (flat.norm(dim=1) * target.norm())
            np.testing.assert_allclose(run.quantity(name, "common_distance_cosine").common_distance_cosine.to_numpy(), (1 - cos).numpy(),
                                       rtol=1e-4, atol=1e-6)
            own = run.quantity(name, "distance_l2").distance_l2.to_numpy()
            if name == "random" or not norm:  # one target: the same partition's mean, or no batch statistics
                np.testing.assert_allclose(common, own, rtol=1e-5)
        own_full = ref["sorted"].mean(0)
        if norm:  # the test can fail: with BatchNorm the sorted partition's own mean is another vector
            assert float((own_full - target).norm()) > 1e-3 * float(target.norm())
            assert not np.allclose(run.quantity("sorted", "common_distance_l2").common_distance_l2.to_numpy(),
                                   run.quantity("sorted", "distance_l2").distance_l2.to_numpy(), rtol=1e-3)


def test_no_reference_probe_no_common_target(tmp_path):
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    with gradlab.Tracker(_model(True), tmp_path / "r.h5", probes={"mine": [(x[:8], y[:8]), (x[8:], y[8:])]},
                         param_stats="off") as tr:
        tr.epoch_start()
        tr.epoch_end(lr=0.1)
    with gradlab.open_run(tmp_path / "r.h5") as run:
        stored = set(run.quantities("mine").quantity)
        assert "distance_l2" in stored and "common_distance_l2" not in stored


def test_the_sketch_store_estimates_the_common_target_as_it_estimates_d(tmp_path):
    """With a sketch wider than the gradient (P = 483 < 4096 buckets) the CountSketch estimates are
    close to exact: the common-target D from the sketch store matches the exact store's within 2%,
    and the sorted probe's own-partition D differs from it by far more, so a sketch that estimated
    against the wrong target would fail."""
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(24, 1, 8, 8, generator=g), torch.randint(0, 3, (24,), generator=g)
    x += torch.linspace(-4, 4, 24).view(24, 1, 1, 1)  # sorted batches far apart in brightness
    orders = {"sorted": x.mean(dim=(1, 2, 3)).argsort(), "random": torch.randperm(24, generator=g)}
    got = {}
    for store in ("memory", "sketch"):
        model = _model(True)
        probes = {k: [(x[i], y[i]) for i in v.split(8)] for k, v in orders.items()}
        with gradlab.Tracker(model, tmp_path / f"{store}.h5", probes=probes, param_stats="off", per_layer=False,
                             store=store, sketch_dim=4096) as tr:
            tr.epoch_start()
            tr.epoch_end(lr=0.1)
        with gradlab.open_run(tmp_path / f"{store}.h5") as run:
            got[store] = run.quantity("sorted", "common_distance_l2").common_distance_l2.to_numpy()
            got[store + " own"] = run.quantity("sorted", "distance_l2").distance_l2.to_numpy()
    err = np.max(np.abs(got["sketch"] / got["memory"] - 1))
    gap = np.max(np.abs(got["memory own"] / got["memory"] - 1))
    assert err < 0.02 and gap > 5 * err  # measured: err 0.0096, gap 0.21  # the test can tell the two targets apart
