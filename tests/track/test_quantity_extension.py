"""A per-batch quantity declared here, in the test file alone, reaches the run file, ``Run`` and
``gradlab export`` (another process, which never imports this file) with its description and
units: nothing else in gradlab is edited to add it (gradlab.quantities). Declaring it registers
nothing: the tracker that stores it is given it, and no other test sees it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import gradlab
from gradlab import quantities as Q
from gradlab.errors import ConfigError
from gradlab.runfile import names

DESCRIPTION = "|g_k - G| / |g_k|: batch k's distance to the full gradient in units of its own norm."


class RelativeDistance(Q.Quantity):
    name = "relative_distance"
    units = "1"
    description = DESCRIPTION
    needs = (Q.SQ_DIST, Q.SQ_NORM)

    def compute(self, r):
        return np.sqrt(r[Q.SQ_DIST] / r[Q.SQ_NORM])


def _train(out, sgd_epochs, epochs=2, quantities=(RelativeDistance,)):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 8, 8, generator=g), torch.randint(0, 4, (64,), generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 4))
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    with gradlab.Tracker(model, out, probes={"random": batches}, param_stats="off", quantities=quantities) as tracker:
        sgd_epochs(tracker, model, batches, epochs)


def test_declared_quantity_reaches_file_run_and_export(tmp_path, sgd_epochs):
    out = tmp_path / "run.h5"
    _train(out, sgd_epochs)
    import h5py

    with h5py.File(out, "r", locking=False) as f:  # the file speaks for itself
        ds = f[names.quantity("random", "relative_distance")]
        assert ds.attrs["description"] == DESCRIPTION and ds.attrs["units"] == "1"
        assert [d.label for d in ds.dims] == ["epoch", "batch"]
    with gradlab.open_run(out) as run:
        got = run.quantity("random", "relative_distance")
        d, n = run.distances("random")["distance"], run.norms("random")["batch_norm"]
        np.testing.assert_allclose(got["relative_distance"], d / n, rtol=1e-12)
        assert len(got) == 2 * 4 and set(got.columns) >= {"epoch", "phase", "batch", "batch_score"}
        meta = run.quantities("random").set_index("quantity").loc["relative_distance"]
        assert (meta.units, meta.description, meta.dims) == ("1", DESCRIPTION, "epoch,batch")
        np.testing.assert_allclose(run.batch_table("random")["relative_distance"], d / n, rtol=1e-12)
    # gradlab export in a fresh process that has never seen the declaration
    exp = tmp_path / "exp"
    subprocess.run([sys.executable, "-m", "gradlab", "export", str(out), "--out", str(exp)], check=True,
                   capture_output=True, text=True)
    table = pd.read_csv(exp / "batch_quantities.csv")
    np.testing.assert_allclose(table["relative_distance"], d / n, rtol=1e-9)
    described = pd.read_csv(exp / "quantities.csv").set_index("quantity").loc["relative_distance"]
    assert (described.units, described.description) == (1, DESCRIPTION) or \
        (str(described.units), described.description) == ("1", DESCRIPTION)


def test_a_quantity_the_sketch_store_cannot_give_is_refused_before_any_work(tmp_path):
    class LayerCount(Q.Quantity):  # needs per-layer reductions, which a sketch cannot estimate
        name = "layer_count"
        dims = ("epoch", "batch", "layer")
        needs = (Q.LAYER_SQ_DIST,)

        def compute(self, r):
            return np.ones_like(r[Q.LAYER_SQ_DIST])

    model = torch.nn.Linear(3, 2)
    with pytest.raises(ConfigError, match="layer_count needs layer_sq_dist"):
        gradlab.Tracker(model, tmp_path / "s.h5", probes={}, store="sketch", per_layer=False, quantities=[LayerCount])
    assert not (tmp_path / "s.h5").exists()


def test_declaring_a_quantity_registers_nothing(tmp_path, sgd_epochs):
    """A class declared here is not stored by a tracker that is not given it, and gradlab's own
    quantities are all still there (the doc example's name takes none of theirs)."""
    assert "relative_distance" not in Q.QUANTITIES
    assert {"distance_l2", "batch_norm", "noise_scale"} <= set(Q.QUANTITIES)
    out = tmp_path / "plain.h5"
    _train(out, sgd_epochs, epochs=1, quantities=())
    with gradlab.open_run(out) as run:
        assert "relative_distance" not in set(run.quantities("random")["quantity"])


def test_a_quantity_name_that_is_taken_or_not_a_quantity_is_one_config_error():
    class Clash(Q.Quantity):
        name = "batch_norm"

    with pytest.raises(ConfigError, match="already stored"):
        Q.resolve([Clash])
    with pytest.raises(ConfigError, match="not a gradlab.quantities.Quantity"):
        Q.resolve([object()])
    with pytest.raises(ConfigError, match="unknown track.quantities"):
        Q.resolve(["no_such_quantity"])


def test_unknown_tracker_option_names_the_nearest():
    with pytest.raises(ConfigError, match='did you mean "per_layer"'):
        gradlab.Tracker(torch.nn.Linear(3, 2), "unused.h5", per_layr=False)
