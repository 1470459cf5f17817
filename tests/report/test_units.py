"""The common unit: D / (random control's mean D at the same epoch), against numpy by hand."""
from __future__ import annotations

import numpy as np
import pytest

from gradlab import open_run
from gradlab.report.units import in_own_units, in_random_units, random_unit
from tests.conftest import write_fake_run


def test_random_unit_is_the_controls_epoch_mean(tmp_path):
    path = tmp_path / "r.h5"
    write_fake_run(path, epochs=4, batches=12)
    with open_run(path) as run:
        ctrl = run.distance_matrix("random")
        np.testing.assert_allclose(random_unit(run), ctrl.mean(1))
        d = run.distance_matrix("intensity")
        np.testing.assert_allclose(in_random_units(run, "intensity"), d / ctrl.mean(1)[:, None])
        np.testing.assert_allclose(in_own_units(d).mean(1), 1.0)


def test_twice_as_far_reads_two_whatever_the_spread(tmp_path):
    """A probe whose batches are all twice as far as random batches reads ~2 in random units,
    while the within-order unit puts its best batches well below 1."""
    path = tmp_path / "far.h5"
    write_fake_run(path, epochs=3, batches=16)
    import h5py

    with h5py.File(path, "r+") as f:
        ctrl = f["probes/random/distance_l2"][()]
        rng = np.random.default_rng(1)
        spread = rng.uniform(0.5, 1.5, size=ctrl.shape[1])  # mean 1: shape of the probe's own profile
        spread /= spread.mean()
        f["probes/intensity/distance_l2"][...] = 2.0 * ctrl.mean(1, keepdims=True) * spread
    with open_run(path) as run:
        r = in_random_units(run, "intensity")
        np.testing.assert_allclose(r.mean(1), 2.0, rtol=1e-12)
        assert in_own_units(run.distance_matrix("intensity")).min() < 0.6  # looks "close" in its own unit


def test_no_control_is_a_clear_error(tmp_path):
    path = tmp_path / "nc.h5"
    write_fake_run(path, probes=("intensity",))
    with open_run(path) as run, pytest.raises(KeyError, match="unit of closeness"):
        random_unit(run)
