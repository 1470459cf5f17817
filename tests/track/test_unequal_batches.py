"""Probes whose batches differ in size: user batches of 127-129 images, and the stratified and
per-epoch orders when N is not a multiple of the batch size. D against plain autograd, the
unequal-size noise-scale estimator, equal sizes bit-identical to the old formula, and one-line
refusals at construction."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradlab
from gradlab import quantities as Q
from gradlab.data.datasets import ImageSet
from gradlab.errors import ConfigError

SIZES = (127, 128, 129, 128, 127, 129)  # e.g. batches that hold every class in exact proportion


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 3))


def _grads(model, batches):
    out = []
    for x, y in batches:
        g = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
        out.append(torch.cat([t.reshape(-1) for t in g]).double())
    return torch.stack(out)


def _train_tracked(out, probes, epochs=3, seed=0):
    """A user loop: SGD on random data; returns theta_e's model at every epoch start."""
    model = _net(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(seed + 1)
    snaps = []
    with gradlab.Tracker(model, out, probes, param_stats="off") as tr:
        for _ in range(epochs):
            tr.epoch_start()
            snaps.append(copy.deepcopy(model))
            losses = []
            for _ in range(4):
                x, y = torch.randn(32, 3, 2, 2, generator=g), torch.randint(0, 3, (32,), generator=g)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            tr.epoch_end(lr=0.5, train_loss=float(np.mean(losses)))
    return snaps


def _user_batches(seed=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(m, 3, 2, 2, generator=g), torch.randint(0, 3, (m,), generator=g)) for m in SIZES]


def test_user_batches_of_127_to_129_run_three_epochs_and_match_autograd(tmp_path):
    batches = _user_batches()
    out = tmp_path / "u.h5"
    snaps = _train_tracked(out, {"random": batches})
    m = torch.tensor(SIZES, dtype=torch.float64)
    n = float(m.sum())
    with gradlab.open_run(out) as run:
        assert run.status == "complete" and run.epochs_done == 3
        assert list(run.f["probes/random"].attrs["batch_sizes"]) == list(SIZES)
    from gradlab.report.inspect import describe

    assert "6 batches of 127–129" in describe(out) and "inputs: user batches" in describe(out)
    with gradlab.open_run(out) as run:
        d = run.distance_matrix("random")
        trace = run.quantity("random", "noise_trace").noise_trace.to_numpy()
        g2 = run.quantity("random", "noise_g2").noise_g2.to_numpy()
    for e, model in enumerate(snaps):
        G = _grads(model, batches)
        full = (m[:, None] * G).sum(0) / n  # the size-weighted mean: the gradient of all images' mean loss
        np.testing.assert_allclose(d[e], (G - full).norm(dim=1).numpy(), rtol=2e-5)
        sq = ((G - full) ** 2).sum(1)
        want = float(sq.sum() / ((n - m) / (m * n)).sum())  # E|g_k - G|^2 = tr(S) (n - m_k) / (m_k n)
        np.testing.assert_allclose(trace[e], want, rtol=1e-4)
        np.testing.assert_allclose(g2[e], float((full ** 2).sum()) - want / n, rtol=1e-3, atol=1e-7)


def _old_noise_parts(r):
    """The equal-size estimator as it was (main 96fe462), to check bit-identity."""
    sizes = np.asarray(r[Q.BATCH_SIZE])
    m = int(sizes[0])
    n, sq = int(sizes.sum()), r[Q.SQ_DIST]
    if n <= m or len(sq) < 2:
        return math.nan, math.nan
    return Q.noise_scale_parts(sq, r[Q.FULL_SQ_NORM], m, n)


def test_equal_sizes_are_bit_identical_and_unequal_sizes_use_their_estimator():
    rng = np.random.default_rng(0)
    for k in (2, 5, 195):
        r = {Q.SQ_DIST: rng.uniform(0.1, 3, k), Q.FULL_SQ_NORM: 2.5, Q.BATCH_SIZE: np.full(k, 256)}
        assert Q.noise_parts(r) == _old_noise_parts(r)  # bit for bit
        # the unequal-size formula agrees with it where both apply
        np.testing.assert_allclose(Q.noise_scale_parts_unequal(r[Q.SQ_DIST], 2.5, r[Q.BATCH_SIZE]),
                                   _old_noise_parts(r), rtol=1e-12)
    r = {Q.SQ_DIST: np.array([1.0, 2.0, 3.0]), Q.FULL_SQ_NORM: 1.0, Q.BATCH_SIZE: np.array([10, 20, 30])}
    assert np.isfinite(Q.noise_parts(r)[0])
    assert all(math.isnan(v) for v in Q.noise_parts({**r, Q.SQ_DIST: np.array([1.0]), Q.BATCH_SIZE: [5]}))


def test_unequal_size_estimator_is_unbiased():
    """Monte Carlo over random partitions of n examples into batches of 10, 20, 30: the mean
    estimate of tr(Sigma) is the true one (Sigma with 1/(n-1), as the estimator assumes)."""
    rng = np.random.default_rng(1)
    n, dim, sizes = 60, 4, np.array([10, 20, 30])
    g = rng.standard_normal((n, dim)) * np.array([1.0, 2.0, 0.5, 3.0])
    true = float(g.var(axis=0, ddof=1).sum())
    full = g.mean(0)
    est = []
    for _ in range(20000):
        perm = rng.permutation(n)
        parts = np.split(perm, np.cumsum(sizes)[:-1])
        sq = np.array([((g[p].mean(0) - full) ** 2).sum() for p in parts])
        est.append(Q.noise_scale_parts_unequal(sq, float((full ** 2).sum()), sizes)[0])
    assert abs(np.mean(est) / true - 1) < 0.02


def _imageset(n=70, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 2, 2), generator=g, dtype=torch.uint8)
    return ImageSet("mine", images, torch.randint(0, 3, (n,), generator=g), ("a", "b", "c"))


def test_stratified_and_per_epoch_orders_when_n_is_not_a_multiple(tmp_path):
    data = _imageset()  # 70 images, batches of 16: 4 batches, 6 images left out of every cut
    probes = {"random": gradlab.orders.batches(data, "random", 16),
              "intensity@strat": gradlab.orders.batches(data, "intensity", 16, batching="stratified"),
              **gradlab.orders.gradient_batches(data, ["loss"], 16, batchings=["contiguous", "stratified"])}
    snaps = _train_tracked(tmp_path / "s.h5", probes)
    loader = probes["loss"].scorer.loader
    with gradlab.open_run(tmp_path / "s.h5") as run:
        assert run.epochs_done == 3 and sorted(run.probes) == ["intensity@strat", "loss", "loss@strat", "random"]
        for name in run.probes:
            assert run.num_batches(name) == 4
            d = run.distance_matrix(name)
            for e, model in enumerate(snaps):
                idx = run.order_index(name, e)[:64].reshape(4, 16)
                G = _grads(model, [loader.get(torch.from_numpy(i)) for i in idx])
                np.testing.assert_allclose(d[e], (G - G.mean(0)).norm(dim=1).numpy(), rtol=2e-5, err_msg=name)


@pytest.mark.parametrize("bad, words", [
    ([(torch.zeros(4, 12), torch.zeros(4, dtype=torch.long)), (torch.zeros(3, 12),)], "batch 1 is a tuple"),
    ([(torch.zeros(4, 12), torch.zeros(5, dtype=torch.long))], "4 inputs and 5 targets"),
    ([(torch.zeros(0, 12), torch.zeros(0, dtype=torch.long))], "at least one"),
    ([(torch.zeros(4, 12), [0, 1, 2, 0])], "must be tensors"),
    ([], "no batches"),
])
def test_unsupported_user_batches_are_refused_at_construction(tmp_path, bad, words):
    with pytest.raises(ConfigError) as info:
        gradlab.Tracker(_net(), tmp_path / "x.h5", {"p": bad})
    assert words in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "x.h5").exists()  # refused before the run file was made
