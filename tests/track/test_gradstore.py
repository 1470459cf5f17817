"""Gradient stores: every exact store gives the same D; the disk writer's errors surface;
the sketch's error is bounded; the noise scale is unbiased on a problem with a known answer."""
from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from gradlab.config import ModelConfig
from gradlab.data.datasets import BatchLoader, ImageSet, synthetic_images
from gradlab.quantities import noise_scale, noise_scale_parts
from gradlab.errors import ConfigError, GradlabError
from gradlab.track.stores import DiskStore, RecomputeStore, make_store
from gradlab.track.layout import ParamLayout
from gradlab.models import build_model
from gradlab.train.runner import Runner
from gradlab.track.sketch import CountSketch, sketch_reductions
from gradlab.track.probe import FrozenModel, probe_pass


@pytest.fixture(scope="module")
def probe():
    """A small CNN with BN moved off its init, 4 batches of 16 synthetic images."""
    torch.manual_seed(0)
    x, y = synthetic_images(64, seed=3)
    loader = BatchLoader(ImageSet("t", x, y, tuple(map(str, range(10)))), torch.device("cpu"), 16)
    model = build_model(ModelConfig(name="smallcnn", norm="bn"))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    order = torch.arange(64)
    for xb, yb in loader.batches(order.flip(0)):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    frozen = FrozenModel(model, ParamLayout.of(model))

    def run(name, dtype="float32", per_layer=True, **opts):
        store = make_store(name, dtype, **opts)
        return probe_pass(frozen, loader.batches(order), len(loader), store, ["l2", "cosine"], per_layer,
                          replay=lambda: loader.batches(order)).stats

    return run


def _assert_same(a, b, rtol):
    for m in ("l2", "cosine"):
        np.testing.assert_allclose(a.distance[m], b.distance[m], rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(a.layer_l2, b.layer_l2, rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(a.batch_norm, b.batch_norm, rtol=rtol)
    np.testing.assert_allclose(a.full_norm, b.full_norm, rtol=rtol)
    np.testing.assert_allclose(a.noise_scale, b.noise_scale, rtol=rtol * 100)  # a ratio of near-cancelling sums


def test_exact_stores_agree_fp32(probe, tmp_path):
    ref = probe("memory")
    _assert_same(probe("disk", scratch_dir=str(tmp_path)), ref, 1e-5)
    _assert_same(probe("recompute"), ref, 1e-5)
    assert not list(tmp_path.iterdir())  # the scratch file is gone


@pytest.mark.parametrize("dtype, rtol", [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_half_precision_stores_close_to_fp32(probe, tmp_path, dtype, rtol):
    ref = probe("memory")
    half = probe("memory", dtype)
    _assert_same(half, ref, rtol)
    _assert_same(probe("disk", dtype, scratch_dir=str(tmp_path)), half, 1e-6)  # same rounded gradients
    _assert_same(probe("recompute", dtype), half, 1e-6)


def test_sketch_store_close_to_exact_on_real_gradients(probe):
    ref = probe("memory", per_layer=False)
    est = probe("sketch", per_layer=False, sketch_dim=8192)
    np.testing.assert_allclose(est.batch_norm, ref.batch_norm, rtol=1e-6)  # norms are exact
    np.testing.assert_allclose(est.full_norm, ref.full_norm, rtol=1e-6)
    rel = np.abs(est.distance["l2"] / ref.distance["l2"] - 1)
    assert rel.max() < 0.02, rel


def test_sketch_error_bound_and_unbiased_inner_products():
    """g_k = G + noise of comparable size: the l2 estimate's error shrinks like 1/sqrt(d)."""
    gen = torch.Generator().manual_seed(0)
    p, k = 200_000, 24
    full = torch.randn(p, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 3, p, dtype=torch.float64)
    grads = full + 1.5 * torch.randn(k, p, generator=gen, dtype=torch.float64) * torch.rand(p, generator=gen)
    full = grads.mean(0)
    exact = (grads - full).norm(dim=1).numpy()
    errs = {}
    for d in (512, 8192):
        cs = CountSketch(p, d, torch.device("cpu"), seed=1)
        sk = torch.stack([cs(g) for g in grads])
        sq, dot, nrm = sketch_reductions(sk, (grads ** 2).sum(1).numpy(), cs(full), float(full @ full))
        errs[d] = np.abs(np.sqrt(sq) / exact - 1)
        assert errs[d].max() < 2.5 / math.sqrt(d), (d, errs[d].max())
        np.testing.assert_allclose(dot, (grads @ full).numpy(), rtol=5 / math.sqrt(d))
    assert errs[8192].mean() < errs[512].mean() / 2
    # E <Sa, Sb> = <a, b> over independent sketches (the raw CountSketch is unbiased)
    a, b = grads[0], grads[1]
    est = [float(CountSketch(p, 64, torch.device("cpu"), seed=s)(a) @ CountSketch(p, 64, torch.device("cpu"), seed=s)(b))
           for s in range(200)]
    se = np.std(est) / math.sqrt(len(est))
    assert abs(np.mean(est) - float(a @ b)) < 4 * se


def test_sketch_config_rejects_per_layer(tiny):
    with pytest.raises(ConfigError, match="per_layer = false"):
        tiny(track={"grads": "sketch"})
    with pytest.raises(ConfigError, match="sketch_dim"):
        tiny(track={"grads": "sketch", "per_layer": False, "sketch_dim": 0})


def test_disk_writer_error_surfaces_in_main_thread_and_scratch_file_is_removed(tmp_path, monkeypatch):
    def fail(self, k, arr):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DiskStore, "_write_row", fail)
    st = DiskStore("float32", scratch_dir=str(tmp_path))
    st.begin(50, 1000, torch.device("cpu"))
    with pytest.raises(GradlabError, match="No space left on device.*track.scratch_dir"):
        for k in range(50):
            st.put(k, torch.ones(1000))
        list(st.chunks())
    st.end()
    assert not list(tmp_path.iterdir())


def test_disk_store_roundtrip_bf16_and_free_space_check(tmp_path, monkeypatch):
    st = DiskStore("bfloat16", scratch_dir=str(tmp_path))
    rows = torch.randn(7, 333)
    st.begin(7, 333, torch.device("cpu"))
    for k in range(7):
        st.put(k, rows[k])
    assert len(list(tmp_path.iterdir())) == 1
    got = torch.cat([c for _, c in st.chunks(max_bytes=3 * 333 * 4)])
    assert got.dtype == torch.bfloat16 and torch.equal(got, rows.to(torch.bfloat16))
    assert [s for s, _ in st.chunks(max_bytes=3 * 333 * 4)] == [0, 3, 6]
    st.end()
    assert not list(tmp_path.iterdir())
    import shutil
    from collections import namedtuple

    monkeypatch.setattr(shutil, "disk_usage", lambda p: namedtuple("U", "total used free")(10, 10, 0))
    with pytest.raises(ConfigError, match="scratch space"):
        DiskStore("float32", scratch_dir=str(tmp_path)).begin(10, 10**6, torch.device("cpu"))


def test_recompute_needs_a_replayable_source(probe):
    x, y = synthetic_images(32, seed=1)
    loader = BatchLoader(ImageSet("t", x, y, tuple(map(str, range(10)))), torch.device("cpu"), 16)
    model = build_model(ModelConfig(name="smallcnn", norm="none"))
    frozen = FrozenModel(model, ParamLayout.of(model))
    with pytest.raises(ValueError, match="replay"):
        probe_pass(frozen, loader.batches(torch.arange(32)), 2, RecomputeStore(), ["l2"], False)
    batches = list(loader.batches(torch.arange(32)))  # a list is read twice without help
    a = probe_pass(frozen, batches, 2, RecomputeStore(), ["l2"], False).stats
    b = probe_pass(frozen, batches, 2, make_store("memory", "float32"), ["l2"], False).stats
    np.testing.assert_allclose(a.distance["l2"], b.distance["l2"], rtol=1e-6)


@pytest.mark.e2e
@pytest.mark.parametrize("grads", ["disk", "recompute", "sketch"])
def test_runner_with_each_store_matches_memory(tiny, tmp_path, grads):
    common = {"probes": ["random"], "per_layer": grads != "sketch", "keep_grads": "all"}
    ref = Runner(tiny(track={**common, "grads": "memory"}, train={"epochs": 1},
                      output={"path": str(tmp_path / "m.h5")}), progress=False, log=lambda s: None).run()
    out = Runner(tiny(track={**common, "grads": grads, "sketch_dim": 4096}, train={"epochs": 1},
                      output={"path": str(tmp_path / f"{grads}.h5")}), progress=False, log=lambda s: None).run()
    assert not list(tmp_path.glob("gradlab-grads-*"))  # the disk store's scratch files (next to the run) are gone
    with h5py.File(ref, "r") as a, h5py.File(out, "r") as b:
        da, db = a["probes/random/distance_l2"][()], b["probes/random/distance_l2"][()]
        if grads == "sketch":
            assert b["probes/random/sketch"].shape == (1, len(da[0]), 4096)
            np.testing.assert_allclose(db, da, rtol=0.05)
        else:
            np.testing.assert_allclose(db, da, rtol=1e-5)
            np.testing.assert_allclose(b["probes/random/grads/epoch_0"][()], a["probes/random/grads/epoch_0"][()])


# --------------------------------------------------------------------------- noise scale

def _linear_problem(rng, n, p, delta, sigma):
    """Per-example gradients of 0.5 (x.w - y)^2 at w = w* + delta, x ~ N(0, I), y = x.w* + eps.

    g_i = x_i x_i^T delta - x_i eps_i, so E g = delta and (Isserlis)
    Cov g = (|delta|^2 + sigma^2) I + delta delta^T: tr(Sigma) = p (|delta|^2 + sigma^2) + |delta|^2.
    """
    x = rng.normal(size=(n, p))
    eps = rng.normal(size=n) * sigma
    return x * (x @ delta - eps)[:, None]


def _partition_stats(rng, per_example, m):
    n = len(per_example)
    batches = per_example[rng.permutation(n)].reshape(n // m, m, -1).mean(1)
    full = per_example.mean(0)
    return ((batches - full) ** 2).sum(1), float(full @ full)


def test_noise_scale_trace_is_unbiased_over_random_partitions():
    """Fixed data set: averaged over random partitions, the tr(Sigma) estimate equals the
    trace of the sample covariance (ddof=1) of the per-example gradients."""
    rng = np.random.default_rng(0)
    n, m, p = 512, 32, 10
    g = _linear_problem(rng, n, p, rng.normal(size=p), 0.5)
    exact = np.trace(np.cov(g.T, ddof=1))
    est = np.array([noise_scale_parts(*_partition_stats(rng, g, m), m, n)[0] for _ in range(3000)])
    se = est.std() / math.sqrt(len(est))
    assert abs(est.mean() - exact) < 4 * se and se < 0.01 * exact  # a wrong (n-m)/n factor is off by 6 %


def test_noise_scale_known_answer_linear_least_squares():
    """Data sets drawn from the population: tr(Sigma) and |G_true|^2 estimates are unbiased
    against the closed form, and B_simple is close to tr(Sigma) / |G_true|^2."""
    rng = np.random.default_rng(1)
    n, m, p, sigma = 128, 8, 8, 1.0
    delta = rng.normal(size=p) * 0.7
    tr_true = p * (delta @ delta + sigma ** 2) + delta @ delta
    g2_true = float(delta @ delta)
    parts = np.array([noise_scale_parts(*_partition_stats(rng, _linear_problem(rng, n, p, delta, sigma), m), m, n)
                      for _ in range(2000)])
    for est, true in ((parts[:, 0], tr_true), (parts[:, 1], g2_true)):
        se = est.std() / math.sqrt(len(est))
        assert abs(est.mean() - true) < 4 * se, (est.mean(), true, se)
        assert se < 0.02 * true
    # the naive |G|^2 (no tr(Sigma)/n correction) is biased by tr(Sigma)/n: the test can tell
    naive = parts[:, 1] + parts[:, 0] / n
    assert abs(naive.mean() - g2_true) > 8 * naive.std() / math.sqrt(len(naive))
    b = [noise_scale(*_partition_stats(rng, _linear_problem(rng, n, p, delta, sigma), m), m, n) for _ in range(400)]
    assert abs(np.median(b) / (tr_true / g2_true) - 1) < 0.1  # a ratio: consistent, not exactly unbiased
