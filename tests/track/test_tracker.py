"""Algorithm 1 against naive references: plain autograd on a deep copy, numpy distances."""
from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradlab.config import ModelConfig
from gradlab.data.datasets import BatchLoader, ImageSet, synthetic_images
from gradlab.quantities import noise_scale
from gradlab.track.distances import FullGradient
from gradlab.track.stores import MemoryStore
from gradlab.track.layout import ParamLayout
from gradlab.models import build_model
from gradlab.train.runner import Runner, build_study
from gradlab.runfile.writer import RunWriter
from gradlab.track.probe import FrozenModel
from tests.conftest import KEEP_ALL


def _data(n=96):
    x, y = synthetic_images(n, seed=7)
    return BatchLoader(ImageSet("t", x, y, tuple(map(str, range(10)))), torch.device("cpu"), 32)


def _naive_grads(model, x, y):
    loss = F.cross_entropy(model(x), y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, [p for p in model.parameters()])])


@pytest.mark.parametrize("norm", ["none", "bn"])
def test_probe_grads_match_autograd_on_deepcopy_while_training_continues(norm):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="smallcnn", norm=norm))
    loader = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    order = torch.arange(96)
    for x, y in loader.batches(order):  # move away from init so BN stats are non-trivial
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    layout = ParamLayout.of(model)
    reference = copy.deepcopy(model)  # the paper's net_compare at theta_e
    frozen = FrozenModel(model, layout)
    buffers_before = {n: b.clone() for n, b in frozen.buffers.items()}
    for x, y in loader.batches(order.flip(0)):  # training goes on: the live model changes
        opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    assert not torch.equal(layout.flatten([p for p in model.parameters()]), layout.flatten(list(frozen.params.values())))
    for x, y in loader.batches(order):
        ours = frozen.grad(x, y)
        ref = _naive_grads(reference, x, y)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for n, b in frozen.buffers.items():  # BN ran in train mode many times: theta_e unchanged
        assert torch.equal(b, buffers_before[n]), n


def test_full_gradient_equals_whole_dataset_gradient_without_bn():
    torch.manual_seed(1)
    model = build_model(ModelConfig(name="smallcnn", norm="none"))
    loader = _data(96)
    layout = ParamLayout.of(model)
    frozen = FrozenModel(model, layout)
    full = FullGradient(layout.size, torch.device("cpu"))
    for x, y in loader.batches(torch.arange(96)):
        full.add(frozen.grad(x, y), len(y))
    xs, ys = loader.get(torch.arange(96))
    ref = _naive_grads(copy.deepcopy(model), xs, ys).double()
    torch.testing.assert_close(full.mean(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_distances_match_numpy_from_stored_grads(keep_all_run):
    """The shared 3-epoch run of tests/conftest.py (intensity and random probes, every epoch's gradients kept)."""
    with h5py.File(keep_all_run, "r") as f:
        sizes = f["layers/numel"][()]
        off = np.concatenate([[0], np.cumsum(sizes)])
        for probe in ("intensity", "random"):
            g = f[f"probes/{probe}"]
            for e in range(3):
                G = g[f"grads/epoch_{e}"][()].astype(np.float64)
                full = G.mean(0)  # equal batch sizes: the weighted mean is the plain mean
                diff = G - full
                l2 = np.sqrt((diff ** 2).sum(1))
                cos = 1 - G @ full / (np.linalg.norm(G, axis=1) * np.linalg.norm(full))
                layer = np.stack([np.sqrt((diff[:, off[i]:off[i + 1]] ** 2).sum(1)) for i in range(len(sizes))], 1)
                np.testing.assert_allclose(g["distance_l2"][e], l2, rtol=1e-5)
                np.testing.assert_allclose(g["distance_cosine"][e], cos, rtol=1e-4, atol=1e-6)
                np.testing.assert_allclose(g["layer_distance_l2"][e], layer, rtol=1e-5, atol=1e-9)
                np.testing.assert_allclose(g["batch_norm"][e], np.linalg.norm(G, axis=1), rtol=1e-5)
                np.testing.assert_allclose(g["full_norm"][e], np.linalg.norm(full), rtol=1e-5)


@pytest.mark.e2e
def test_stored_epoch0_grads_equal_autograd_on_fresh_model(tiny, keep_all_run):
    """End to end: the run file's epoch-0 gradients are those of the seeded initial model
    (the shared run of tests/conftest.py; tiny(**KEEP_ALL) builds the same seeded study)."""
    cfg = tiny(**KEEP_ALL)
    study = build_study(cfg)
    reference = copy.deepcopy(study.model)
    loader = BatchLoader(study.train, torch.device("cpu"), cfg.train.batch_size)
    with h5py.File(keep_all_run, "r") as f:
        index = torch.from_numpy(f["probes/random/index"][()])
        stored = torch.from_numpy(f["probes/random/grads/epoch_0"][()])
    for k, (x, y) in enumerate(loader.batches(index)):
        torch.testing.assert_close(stored[k], _naive_grads(reference, x, y), rtol=1e-5, atol=1e-5)


@pytest.mark.e2e
def test_tracking_does_not_change_training(tiny):
    weights = []
    for enabled in (True, False):
        cfg = tiny(track={"enabled": enabled}, output={"path": str(tiny().output.path) + f".{enabled}.h5"})
        r = Runner(cfg, progress=False, log=lambda s: None)
        r.run()
        weights.append([p.detach().clone() for p in r.study.model.state_dict().values()])
    for a, b in zip(*weights):
        assert torch.equal(a, b)  # bit-identical, not merely close


def test_memory_store_roundtrip_and_chunks():
    st = MemoryStore("float32")
    st.begin(5, 7, torch.device("cpu"))
    rows = torch.randn(5, 7)
    for k in range(5):
        st.put(k, rows[k])
    got = torch.cat([c for _, c in st.chunks(max_bytes=2 * 7 * 4)])
    assert torch.equal(got, rows)
    starts = [s for s, _ in st.chunks(max_bytes=2 * 7 * 4)]
    assert starts == [0, 2, 4]


def test_noise_scale_known_answer():
    """Per-example gradients with known mean and covariance; B_simple = tr(S)/|mu|^2 ~ exact."""
    rng = np.random.default_rng(0)
    n, m, p = 4096, 64, 50
    mu = rng.normal(size=p)
    per_example = mu + rng.normal(size=(n, p)) * 2.0  # tr(Sigma) = 4 p
    batches = per_example.reshape(n // m, m, p).mean(1)
    full = per_example.mean(0)
    sq = ((batches - full) ** 2).sum(1)
    b_simple = noise_scale(sq, float(full @ full), m, n)
    s = np.cov(per_example.T, ddof=1)
    exact_sample = np.trace(s) / (full @ full - np.trace(s) / n)
    assert abs(b_simple - exact_sample) / exact_sample < 0.15  # one partition: a noisy, unbiased estimate
    assert abs(b_simple - 4 * p / (mu @ mu)) / (4 * p / (mu @ mu)) < 0.2


def test_writer_commit_marker(tmp_path):
    model = build_model(ModelConfig(name="smallcnn"))
    w = RunWriter(tmp_path / "r.h5", {"train": {"milestones": []}}, {"seed": 0}, ParamLayout.of(model))
    w.append("train/loss", 1.0, 0)
    w.commit(0)
    w.append("train/loss", 2.0, 1)  # written but not committed: a crash here
    w.f.flush()
    with h5py.File(tmp_path / "r.h5", "r", locking=False) as f:
        assert f.attrs["epochs_done"] == 1
    w.close("failed", "test")
    from gradlab import open_run

    with open_run(tmp_path / "r.h5") as run:
        assert run.epochs_done == 1 and run.status == "failed"
        assert len(run.train_curves()) == 1
