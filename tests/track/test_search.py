"""The ``search`` order: its stored D is the real train-mode distance by plain autograd, its cost
stays within ``search_passes``, its record is consistent, and the config checks it."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradlab
from gradlab.config import ModelConfig, config_from_dict
from gradlab.data.datasets import ImageSet
from gradlab.errors import ConfigError
from gradlab.models import build_model
from gradlab.runfile import names

N, M = 48, 8  # 6 batches of 8
K = N // M


def _data(seed: int = 4) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(N, 3, 32, 32, generator=g), torch.randint(0, 4, (N,), generator=g)
    return ImageSet("t", (x * 40 + 128).clamp(0, 255).to(torch.uint8), y, tuple(str(i) for i in range(4)))


def _train_mode_grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, index: np.ndarray) -> np.ndarray:
    """``[K, P]`` float64: each batch's gradient at ``model``'s parameters, train mode (BatchNorm on the
    batch's own statistics), plain ``torch.autograd``."""
    model = copy.deepcopy(model).train()
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for k in range(K):
        rows = torch.from_numpy(index[k * M:(k + 1) * M])
        loss = F.cross_entropy(model(x[rows]), y[rows])
        out.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double())
    return torch.stack(out).numpy()


def _tracked(tmp_path, passes: int, epochs: int = 2):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="smallcnn", norm="bn"))
    data = _data()
    probes = {"random": gradlab.orders.batches(data, "random", M)}
    probes.update(gradlab.orders.gradient_batches(data, ["search"], M, search_passes=passes))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = probes["random"].loader
    snaps = []
    with gradlab.Tracker(model, tmp_path / "s.h5", probes=probes, per_layer=False, param_stats="off") as tr:
        for _ in range(epochs):
            tr.epoch_start()
            snaps.append(copy.deepcopy(model))
            for k in range(K):
                xb, yb = loader.get(torch.arange(k * M, k * M + M))
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
            tr.epoch_end(lr=0.05)
    return gradlab.open_run(tmp_path / "s.h5"), snaps, loader


def test_stored_distance_is_the_train_mode_distance_by_autograd(tmp_path):
    """With BatchNorm, by plain autograd in train mode at theta_e: every stored search batch's D is
    |g_k - G| with G the mean of its batch gradients (how the tracker measures every probe); its
    batch_score and the search's objective are |g_k - nabla_e| against the random pass's nabla_e."""
    run, snaps, loader = _tracked(tmp_path, passes=4)
    x, y = loader.get(torch.arange(N))
    rec = lambda key, e: run.f[names.order_record("search", key)][e]  # noqa: E731
    with run:
        for e, snap in enumerate(snaps):
            idx = run.order_index("search", e)
            assert sorted(idx.tolist()) == list(range(N))
            g = _train_mode_grads(snap, x, y, idx)
            d = np.linalg.norm(g - g.mean(0), axis=1)
            np.testing.assert_allclose(run.distance_matrix("search")[e], d, rtol=2e-4)
            np.testing.assert_allclose(rec("search_d_own", e), d.mean(), rtol=2e-4)
            full = _train_mode_grads(snap, x, y, run.order_index("random", e)).mean(0)  # the random pass's nabla_e
            to_full = np.linalg.norm(g - full, axis=1)
            np.testing.assert_allclose(run.batch_score_matrix("search")[e], to_full, rtol=2e-4)
            np.testing.assert_allclose(rec("search_d_after", e), to_full.mean(), rtol=2e-4)


@pytest.mark.parametrize("passes", [1, 3])
def test_cost_bound_and_record(tmp_path, passes):
    """At most search_passes x K batch gradients per epoch; one pass buys the first start only (no
    move); the record reads back per epoch with mean D after <= before, accepted <= proposed."""
    run, _, _ = _tracked(tmp_path, passes=passes)
    with run:
        rec = run.epoch_table("search")
        assert run.probe_attrs("search")["search_passes"] == passes
        assert list(run.probe_attrs("search")["search_starts"])[0] == "intensity@class"
    assert len(rec) == 2 and set(names.SEARCH_RECORD) <= set(rec.columns)
    assert (rec.search_evals <= passes * K).all() and (rec.search_evals >= K).all()
    assert (rec.search_d_after <= rec.search_d_before).all()
    assert (rec.search_accepted <= rec.search_proposed).all() and (rec.search_seconds > 0).all()
    if passes == 1:
        assert (rec.search_evals == K).all() and (rec.search_proposed == 0).all() and (rec.search_start == 0).all()
        np.testing.assert_allclose(rec.search_d_after, rec.search_d_before)
    else:
        assert (rec.search_proposed >= 1).all() and (rec.search_evals == K + 2 * rec.search_proposed).all()


def test_config_checks_search():
    base = {"track": {"probes": ["random", "search"]}}
    assert config_from_dict(base).track.search_passes == 10
    with pytest.raises(ConfigError, match="search_passes"):
        config_from_dict({"track": {"probes": ["random", "search"], "search_passes": 0}})
    with pytest.raises(ConfigError, match="random"):
        config_from_dict({"track": {"probes": ["intensity", "search"]}})
    with pytest.raises(ConfigError, match="search_passes"):
        gradlab.orders.gradient_batches(_data(), ["search"], M, search_passes=0)
