"""Seed-mean heatmaps: D / each seed's random mean, averaged over seeds, against numpy by hand
on constructed runs whose seeds differ in the scale of D."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from gradlab import open_run
from gradlab.report.page import build_report
from gradlab.report.plots import seed_mean_heatmap

K = 12
SCALES = (1.0, 10.0, 100.0)  # each seed's D in its own scale, as seeds of a real study drift


def _seeds(tmp_path, fake_run, top=(0.6, 0.8, 1.0), commits=(5, 5, 4), probes=("intensity", "random")):
    """Three seeds, epochs 0-1 in phase 0 and 2-4 in phase 1; seed s has its top batches at
    ``top[s]`` of the rest and every distance times ``SCALES[s]``; seed 2 committed 4 epochs."""
    paths = []
    for s, (t, c) in enumerate(zip(top, commits)):
        prof = np.where(np.arange(K) >= 9, t, 1.0)
        path = fake_run(tmp_path / f"r-s{s}.h5", epochs=5, commit=c, milestones=(2,), batches=K, seed=s, probes=probes,
                        profiles={"intensity": {0: prof, 1: prof}})
        with h5py.File(path, "r+") as f:
            for p in probes:
                f[f"probes/{p}/distance_l2"][...] *= SCALES[s]
        paths.append(path)
    return [open_run(p) for p in paths]


def _raw(run, probe, epochs):
    """The stored D rows, read straight from the HDF5 file (no reader or unit code)."""
    return run.f[f"probes/{probe}/distance_l2"][()][epochs].astype(np.float64)


def test_seed_mean_is_the_mean_of_each_seeds_random_unit(tmp_path, fake_run):
    runs = _seeds(tmp_path, fake_run)
    epochs = np.array([2, 3])  # phase 1, committed in every seed (seed 2 stopped after epoch 3)
    rel = np.stack([_raw(r, "intensity", epochs) / _raw(r, "random", epochs).mean(1, keepdims=True)
                    for r in runs])
    fig = seed_mean_heatmap(runs, "intensity", phase=1)
    tr = fig.data[0]
    np.testing.assert_allclose(tr.z, rel.mean(0), rtol=1e-6)
    assert list(tr.y) == [2, 3] and np.asarray(tr.z).shape == (2, K)
    custom = np.asarray(tr.customdata)
    np.testing.assert_allclose(custom[..., 0], np.broadcast_to(runs[0].batch_scores("intensity"), (2, K)), rtol=1e-6)
    np.testing.assert_allclose(custom[..., 1], rel.min(0), rtol=1e-6)
    np.testing.assert_allclose(custom[..., 2], rel.max(0), rtol=1e-6)
    # the seeds' scales matter: pooling raw D first (a ratio of seed means) gives another answer
    pooled = (np.stack([_raw(r, "intensity", epochs) for r in runs]).mean(0)
              / np.stack([_raw(r, "random", epochs) for r in runs]).mean(0).mean(1, keepdims=True))
    assert np.abs(pooled[:, 9:] - rel.mean(0)[:, 9:]).min() > 0.05
    assert fig.data[0].colorbar.title.text == "D / random mean (mean of 3 seeds)"
    assert "mean of 3 seeds" in fig.layout.title.text and "epochs 2–3" in fig.layout.title.text
    for r in runs:
        r.close()


def test_twice_the_random_mean_reads_two_in_every_cell(tmp_path, fake_run):
    runs = _seeds(tmp_path, fake_run, commits=(5, 5, 5))
    for r in runs:
        r.close()
    for s in range(3):
        with h5py.File(tmp_path / f"r-s{s}.h5", "r+") as f:
            ctrl = f["probes/random/distance_l2"][()]
            f["probes/intensity/distance_l2"][...] = 2.0 * np.broadcast_to(ctrl.mean(1, keepdims=True), ctrl.shape)
    runs = [open_run(tmp_path / f"r-s{s}.h5") for s in range(3)]
    for phase, rows in ((0, [0, 1]), (1, [2, 3, 4])):
        tr = seed_mean_heatmap(runs, "intensity", phase=phase).data[0]
        assert list(tr.y) == rows
        np.testing.assert_allclose(tr.z, 2.0, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(tr.customdata)[..., 1:], 2.0, rtol=1e-6)  # no spread across seeds
    for r in runs:
        r.close()


def test_without_the_control_the_unit_is_the_own_epoch_mean(tmp_path, fake_run):
    runs = _seeds(tmp_path, fake_run, probes=("intensity",))
    epochs = np.array([0, 1])
    own = np.stack([_raw(r, "intensity", epochs) for r in runs])
    own /= own.mean(2, keepdims=True)
    fig = seed_mean_heatmap(runs, "intensity", phase=0)
    np.testing.assert_allclose(fig.data[0].z, own.mean(0), rtol=1e-6)
    assert "own epoch mean" in fig.layout.title.text and "random" in fig.layout.title.text
    assert fig.data[0].colorbar.title.text == "D / own epoch mean (mean of 3 seeds)"
    for r in runs:
        r.close()


def test_report_shows_seed_mean_heatmaps_only_for_seeds(tmp_path, fake_run):
    runs = _seeds(tmp_path, fake_run)
    page, figs = build_report(runs, n_perm=20)
    heat = [f for f in figs if f.slug.startswith("seed_mean_heatmap")]
    assert sorted(f.slug for f in heat) == sorted(f"seed_mean_heatmap_0_1_2_{p}_phase{ph}"
                                                 for p in ("intensity", "random") for ph in (0, 1))
    assert "Seed-mean heatmaps" in page and all(f"fig-{f.slug}" in page for f in heat)
    for ph in (0, 1):  # the probes of a phase share one colour range
        pair = [f.fig.data[0] for f in heat if f.slug.endswith(f"phase{ph}")]
        z = np.concatenate([np.ravel(t.z) for t in pair])
        assert all((t.zmin, t.zmax) == pytest.approx((z.min(), z.max())) for t in pair)
    single, single_figs = build_report(runs[:1], n_perm=20)
    assert "Seed-mean heatmaps" not in single and not any(f.slug.startswith("seed_mean") for f in single_figs)
    for r in runs:
        r.close()
