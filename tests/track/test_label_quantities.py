"""Label composition per batch (``label_entropy`` in nats, ``top_class_share``), declared in
gradlab.quantities and counted in the probe pass: checked against numpy on the batch labels, for
user batches, gradlab's own orders (incl. the class cut), masks, and targets that are no labels."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradlab
from gradlab import quantities as Q
from gradlab.runfile import names
from gradlab.track.distances import ClassCounter


def _entropy(labels: np.ndarray) -> float:
    """The naive reference: entropy (nats) of the label histogram."""
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _top(labels: np.ndarray) -> float:
    return float(np.unique(labels, return_counts=True)[1].max() / len(labels))


def test_quantities_from_counts_match_numpy():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 5, 40), np.full(40, 3), rng.choice([0, 4], 40)]
    counts = np.stack([np.bincount(lab, minlength=6) for lab in labels]).astype(float)
    counts = np.vstack([counts, np.full(6, np.nan)])  # a batch with a label out of range
    r = {Q.CLASS_COUNTS: counts, Q.BATCH_SIZE: np.full(4, 40)}
    h, top = Q.QUANTITIES["label_entropy"].compute(r), Q.QUANTITIES["top_class_share"].compute(r)
    np.testing.assert_allclose(h[:3], [_entropy(lab) for lab in labels], rtol=1e-12)
    np.testing.assert_allclose(top[:3], [_top(lab) for lab in labels], rtol=1e-12)
    assert h[1] == 0.0 and not np.signbit(h[1]) and top[1] == 1.0
    assert np.isnan(h[3]) and np.isnan(top[3])
    none = {Q.BATCH_SIZE: np.full(3, 8)}  # no counts at all (targets that are no labels): NaN
    assert np.isnan(Q.QUANTITIES["label_entropy"].compute(none)).all()
    assert Q.QUANTITIES["label_entropy"].units == "nats" and Q.QUANTITIES["top_class_share"].units == "1"


def test_counter_counts_images_pixels_and_leaves_out_ignored_labels():
    c = ClassCounter()
    c.add(torch.tensor([0, 2, 2, -100]), (4, 3))  # one label ignored (cross-entropy's ignore_index)
    c.add(torch.tensor([1, 1, 5, 0]), (4, 3))  # a label >= C: this batch's row is unknown
    masks = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [0, 1]]])
    c.add(masks, (2, 3, 2, 2))  # per-pixel labels of a segmentation output
    m = c.matrix(3)
    np.testing.assert_array_equal(m[0], [1, 0, 2])
    assert np.isnan(m[1]).all()
    np.testing.assert_array_equal(m[2], np.bincount(masks.reshape(-1).numpy(), minlength=3))
    soft = ClassCounter()
    soft.add(torch.rand(4, 3), (4, 3))  # soft targets: no class labels
    assert soft.matrix(1) is None and soft.width == -1
    other = ClassCounter()
    other.add(torch.tensor([0, 1]), ())  # an output that is not one tensor: no class dimension to count in
    assert other.matrix(1) is None


def _model(classes=4):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, classes))


def _track(out, model, probes, loss_fn=F.cross_entropy, epochs=2):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    first = next(iter(probes.values()))
    with gradlab.Tracker(model, out, probes=probes, param_stats="off", loss_fn=loss_fn) as tracker:
        for _ in range(epochs):
            tracker.epoch_start()
            for x, y in first:
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
            tracker.epoch_end(lr=0.05)


def test_user_batches_store_each_batchs_composition(tmp_path):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 3, 8, 8, generator=g)
    skewed = torch.cat([torch.full((16,), 2), torch.randint(0, 4, (48,), generator=g), torch.arange(4).repeat(8)])
    balanced = torch.randint(0, 4, (96,), generator=g)
    probes = {"random": [(x[i:i + 16], balanced[i:i + 16]) for i in range(0, 96, 16)],
              "skewed": [(x[i:i + 16], skewed[i:i + 16]) for i in range(0, 96, 16)]}
    out = tmp_path / "u.h5"
    _track(out, _model(), probes)
    with h5py.File(out, "r", locking=False) as f:
        ds = f[names.quantity("skewed", "label_entropy")]
        assert ds.attrs["units"] == "nats" and "segmentation" in ds.attrs["description"]
        assert [d.label for d in ds.dims] == ["epoch", "batch"] and ds.shape == (2, 6)
    with gradlab.open_run(out) as run:
        for probe, labels in (("random", balanced), ("skewed", skewed)):
            batches = labels.numpy().reshape(6, 16)
            got = run.batch_table(probe)
            for e in range(2):
                rows = got[got.epoch == e]
                np.testing.assert_allclose(rows.label_entropy, [_entropy(b) for b in batches], rtol=1e-12)
                np.testing.assert_allclose(rows.top_class_share, [_top(b) for b in batches], rtol=1e-12)
        assert run.quantity("skewed", "label_entropy").label_entropy.iloc[0] == 0.0  # the one-class batch


def test_masks_count_pixels_and_soft_targets_give_nan(tmp_path):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, 3, 6, 6, generator=g)
    masks = (torch.rand(32, 6, 6, generator=g) < torch.linspace(0.1, 0.9, 32).view(-1, 1, 1)).long()
    torch.manual_seed(0)
    seg = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    out = tmp_path / "seg.h5"
    _track(out, seg, {"random": [(x[i:i + 8], masks[i:i + 8]) for i in range(0, 32, 8)]}, epochs=1)
    with gradlab.open_run(out) as run:
        t = run.batch_table("random")
        want = [_entropy(masks[i:i + 8].numpy().reshape(-1)) for i in range(0, 32, 8)]
        np.testing.assert_allclose(t.label_entropy, want, rtol=1e-12)
        tops = [_top(masks[i:i + 8].numpy().reshape(-1)) for i in range(0, 32, 8)]
        np.testing.assert_allclose(t.top_class_share, tops, rtol=1e-12)
    soft = F.softmax(torch.randn(32, 4, generator=g), 1)  # soft targets: no class labels to count
    out = tmp_path / "soft.h5"
    x = torch.randn(32, 3, 8, 8, generator=g)
    _track(out, _model(), {"random": [(x[i:i + 8], soft[i:i + 8]) for i in range(0, 32, 8)]},
           loss_fn=lambda o, t: F.cross_entropy(o, t), epochs=1)
    with gradlab.open_run(out) as run:
        t = run.batch_table("random")
        assert t.label_entropy.isna().all() and t.top_class_share.isna().all()
        assert np.isfinite(t.distance_l2).all()  # the rest of the pass is untouched


def test_study_with_class_cut_records_the_balanced_composition(tiny):
    """``gradlab run`` with batching = ["contiguous", "class"]: intensity@class and random@class in the
    file; their stored compositions equal numpy's on the stored index and the dataset's labels."""
    from gradlab.data.datasets import load_split
    from gradlab.train.runner import Runner

    cfg = tiny(train={"epochs": 1, "milestones": [], "batch_size": 32},
               track={"probes": ["intensity", "random"], "batching": ["contiguous", "class"], "per_layer": False,
                      "param_stats": "off"})
    out = Runner(cfg, progress=False, log=lambda s: None).run()
    labels = load_split(cfg.data, True).labels.numpy()
    with gradlab.open_run(out) as run:
        assert set(run.probes) == {"intensity", "intensity@class", "random", "random@class"}
        assert run.batching("random@class") == "class" and run.batching("random") == "contiguous"
        for p in run.probes:
            batches = labels[run.order_index(p)[:256]].reshape(8, 32)
            t = run.batch_table(p)
            np.testing.assert_allclose(t.label_entropy, [_entropy(b) for b in batches], rtol=1e-12)
            np.testing.assert_allclose(t.top_class_share, [_top(b) for b in batches], rtol=1e-12)
            if p.endswith("@class"):  # every class in proportion, up to one image
                share = np.bincount(labels[run.order_index(p)[:256]], minlength=10) / 256
                counts = np.stack([np.bincount(b, minlength=10) for b in batches])
                assert np.abs(counts - 32 * share).max() < 1
        h = {p: run.batch_table(p).label_entropy.mean() for p in run.probes}
        assert h["random@class"] >= h["random"] - 1e-9 and h["intensity@class"] > h["intensity"]


@pytest.mark.parametrize("store", ["sketch"])
def test_an_estimating_store_still_gives_the_label_quantities(tmp_path, store):
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 4, (32,), generator=g)
    out = tmp_path / "s.h5"
    model = _model()
    with gradlab.Tracker(model, out, probes={"random": [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]},
                         store=store, per_layer=False, param_stats="off", sketch_dim=64) as tracker:
        tracker.epoch_start()
        tracker.epoch_end(lr=0.1)
    with gradlab.open_run(out) as run:
        np.testing.assert_allclose(run.batch_table("random").label_entropy,
                                   [_entropy(y[i:i + 8].numpy()) for i in range(0, 32, 8)], rtol=1e-12)


def test_a_model_whose_output_is_not_a_tensor_still_probes(tmp_path):
    class Dict(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _model()

        def forward(self, x):
            return {"logits": self.net(x)}

    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
    out = tmp_path / "d.h5"
    with gradlab.Tracker(Dict(), out, probes={"random": [(x[:8], y[:8]), (x[8:], y[8:])]}, param_stats="off",
                         loss_fn=lambda o, t: F.cross_entropy(o["logits"], t)) as tracker:
        tracker.epoch_start()
        tracker.epoch_end(lr=0.1)
    with gradlab.open_run(out) as run:
        t = run.batch_table("random")
        assert t.label_entropy.isna().all() and np.isfinite(t.distance_l2).all()
