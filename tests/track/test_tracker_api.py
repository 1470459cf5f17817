"""gradlab.Tracker in a plain PyTorch loop written here, on a model defined here, checked
against torch.autograd at a theta_e this test snapshots itself."""
from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradlab
from gradlab.errors import ConfigError, GradlabError


class TinyNet(nn.Module):
    """Not from gradlab.models: conv + BatchNorm (running buffers) + linear."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(x.flatten(1))


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + (x[:, 0, 4:].mean((1, 2)) > 0).long()
    return x, y


def _batches(x, y, m):
    return [(x[i:i + m], y[i:i + m]) for i in range(0, len(y) - m + 1, m)]


def _reference(snapshot: nn.Module, batches) -> dict[str, np.ndarray]:
    """Plain autograd at the snapshot theta_e: per-batch gradient, loss; full gradient by weights."""
    grads, losses, sizes = [], [], []
    for x, y in batches:
        m = copy.deepcopy(snapshot).train()  # fresh buffers per batch: theta_e never moves
        loss = F.cross_entropy(m(x), y)
        g = torch.autograd.grad(loss, [p for p in m.parameters()])
        grads.append(torch.cat([t.reshape(-1) for t in g]).double())
        losses.append(loss.item())
        sizes.append(len(y))
    G = torch.stack(grads)
    w = torch.tensor(sizes, dtype=torch.float64)
    full = (G * w[:, None]).sum(0) / w.sum()
    cos = (G @ full) / (G.norm(dim=1) * full.norm())
    return {"l2": (G - full).norm(dim=1).numpy(), "cosine": (1 - cos).numpy(), "batch_norm": G.norm(dim=1).numpy(),
            "full_norm": float(full.norm()), "loss": np.array(losses)}


def _train(out, epochs=3, lrs=(0.1, 0.1, 0.01), probes=None, **kw):
    torch.manual_seed(0)
    model = TinyNet()
    x, y = _data(96, 1)
    probes = probes or {"first": _batches(x[:64], y[:64], 16), "second": _batches(x[32:], y[32:], 16)}
    opt = torch.optim.SGD(model.parameters(), lr=lrs[0], momentum=0.9)
    snapshots = []
    with gradlab.Tracker(model, out=out, probes=probes, config={"note": "user loop"}, **kw) as tracker:
        for epoch in range(epochs):
            for group in opt.param_groups:
                group["lr"] = lrs[epoch]
            tracker.epoch_start()
            snapshots.append(copy.deepcopy(model))  # the test's own theta_e
            for xb, yb in _batches(x, y, 8):  # the user's loop
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                tracker.step()
            tracker.epoch_end(lr=lrs[epoch], train_loss=loss.item(), test_acc=0.5)
    return snapshots, probes


def test_user_loop_matches_autograd(tmp_path):
    out = tmp_path / "mine.h5"
    snapshots, probes = _train(out)
    with gradlab.open_run(out) as run:
        assert run.status == "complete" and run.epochs_done == 3
        assert run.probes == ["first", "second"]
        assert run.config == {"note": "user loop"}
        for name, batches in probes.items():
            d = run.distances(name, measure=None)
            nm = run.norms(name)
            for e, snap in enumerate(snapshots):
                ref = _reference(snap, batches)
                rows = d[d.epoch == e]
                np.testing.assert_allclose(rows.l2, ref["l2"], rtol=1e-5, atol=1e-7)
                np.testing.assert_allclose(rows.cosine, ref["cosine"], rtol=1e-5, atol=1e-6)
                ne = nm[nm.epoch == e]
                np.testing.assert_allclose(ne.batch_norm, ref["batch_norm"], rtol=1e-5)
                np.testing.assert_allclose(ne.full_norm.iloc[0], ref["full_norm"], rtol=1e-5)
                np.testing.assert_allclose(ne.batch_loss, ref["loss"], rtol=1e-6)
        # a new phase starts where lr changed; the reader derives milestones from it
        assert list(run.train_curves().train_phase) == [0, 0, 1] and run.milestones == [2]
        assert run.num_phases == 2
        ps = run.param_stats(["mean"])
        steps = sorted(ps.step.unique())
        assert steps == [0, 12, 24, 36] and sorted(ps.epoch.unique()) == [0.0, 1.0, 2.0, 3.0]


def test_param_stats_every_n_steps_learns_steps_per_epoch(tmp_path):
    out = tmp_path / "every.h5"
    _train(out, epochs=2, param_stats="every:5")
    with gradlab.open_run(out) as run:
        ps = run.param_stats(["mean"]).drop_duplicates("step")
        # 12 steps per epoch, learnt from the first epoch's step() calls
        assert list(ps.step) == [0, 5, 10, 12, 15, 20, 24]
        np.testing.assert_allclose(ps.epoch, np.array([0, 5, 10, 12, 15, 20, 24]) / 12)


def test_probe_errors_are_one_line(tmp_path):
    model = TinyNet()
    x, y = _data(32, 0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True)
    with pytest.raises(ConfigError, match="shuffle=False"):
        gradlab.Tracker(model, out=tmp_path / "a.h5", probes={"p": loader})
    with pytest.raises(ConfigError, match="one-shot"):
        gradlab.Tracker(model, out=tmp_path / "a.h5", probes={"p": iter(_batches(x, y, 8))})
    with pytest.raises(ConfigError, match="JSON"):
        gradlab.Tracker(model, out=tmp_path / "a.h5", config={"f": object()})
    fixed = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    t = gradlab.Tracker(model, out=tmp_path / "b.h5", probes={"p": fixed})
    with pytest.raises(GradlabError, match="epoch_start"):
        t.epoch_end(lr=0.1)
    t.close()
    with pytest.raises(GradlabError, match="already exists"):
        gradlab.Tracker(model, out=tmp_path / "b.h5")


def test_failure_inside_with_marks_the_file_failed(tmp_path):
    out = tmp_path / "f.h5"
    x, y = _data(32, 0)
    with pytest.raises(RuntimeError, match="boom"):
        with gradlab.Tracker(TinyNet(), out=out, probes={"p": _batches(x, y, 8)}) as t:
            t.epoch_start()
            t.epoch_end(lr=0.1)
            t.epoch_start()
            raise RuntimeError("boom")
    with gradlab.open_run(out) as run:
        assert run.status == "failed" and "boom" in run.failure and run.epochs_done == 1
    with h5py.File(out) as f:
        assert f["probes/p/distance_l2"].shape[0] == 1


def test_orders_batches_on_a_user_image_set(tmp_path):
    """gradlab.orders.batches sorts a user's images by a metric into fixed probe batches."""
    from gradlab.data.datasets import ImageSet

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g)
    data = ImageSet("mine", images, torch.arange(40) % 3, ("a", "b", "c"))
    pb = gradlab.orders.batches(data, "intensity", batch_size=8)
    assert pb.num_batches == 5 and pb.batch_size == 8
    sums = images.double().sum((1, 2, 3)).numpy()
    assert np.all(np.diff(sums[pb.index]) >= 0)  # ascending intensity
    np.testing.assert_allclose(pb.batch_score, sums[pb.index].reshape(5, 8).mean(1))
    xs = [x for x, _ in pb.batches()]
    assert len(xs) == 5 and xs[0].dtype == torch.float32 and xs[0].shape == (8, 3, 8, 8)


def test_report_and_inspect_read_a_user_loop_run(tmp_path):
    """gradlab report / inspect work unchanged on a Tracker file whose config is the user's own."""
    from gradlab.report.inspect import describe
    from gradlab.report.page import build_report

    out = tmp_path / "mine.h5"
    _train(out)
    with gradlab.open_run(out) as run:
        page, figs = build_report([run], n_perm=50)
        text = describe(out)
        assert "epochs 2–2, lr 0.01" in "".join(str(f.fig.layout.title.text) for f in figs)
    assert "first" in page and len(figs) > 4 and "epochs_done" in text


def test_summary_and_heatmaps_show_the_stored_lr(tmp_path):
    """After a resume with another train.lr the config no longer says what the run trained with:
    the summary and heatmap titles read /train/lr."""
    from tests.conftest import write_fake_run

    from gradlab.report import plots
    from gradlab.report.summary import phase_summary

    path = tmp_path / "lr.h5"
    write_fake_run(path, epochs=6, milestones=(3,))
    with h5py.File(path, "r+") as f:
        f["train/lr"][...] = [0.3, 0.3, 0.3, 0.03, 0.03, 0.03]  # config says lr 0.1
    with gradlab.open_run(path) as run:
        s = phase_summary(run, n_perm=10)
        assert sorted(s.lr.unique()) == [0.03, 0.3]
        assert "lr 0.03" in plots.heatmap(run, "intensity", 1).layout.title.text
