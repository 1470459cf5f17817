"""A per-batch quantity declared here, in the test file alone, reaches the run file, ``Run`` and
``gradlab export`` (another process, which never imports this file) with its description and
units: nothing else in gradlab is edited to add it (gradlab.quantities)."""
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


@pytest.fixture
def relative_distance():
    """Declare the quantity for one test, then take it out of the registry again."""

    class RelativeDistance(Q.Quantity):
        name = "relative_distance"
        units = "1"
        description = DESCRIPTION
        needs = (Q.SQ_DIST, Q.SQ_NORM)

        def compute(self, r):
            return np.sqrt(r[Q.SQ_DIST] / r[Q.SQ_NORM])

    yield RelativeDistance
    Q.unregister(RelativeDistance.name)


def _train(out, epochs=2):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 8, 8, generator=g), torch.randint(0, 4, (64,), generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    with gradlab.Tracker(model, out, probes={"random": batches}, param_stats="off") as tracker:
        for _ in range(epochs):
            tracker.epoch_start()
            losses = []
            for xb, yb in batches:
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            tracker.epoch_end(lr=0.1, train_loss=float(np.mean(losses)))


def test_declared_quantity_reaches_file_run_and_export(relative_distance, tmp_path):
    out = tmp_path / "run.h5"
    _train(out)
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


def test_a_quantity_the_sketch_store_cannot_give_is_refused_before_any_work(relative_distance, tmp_path):
    class LayerCount(Q.Quantity):  # needs per-layer reductions, which a sketch cannot estimate
        name = "layer_count"
        dims = ("epoch", "batch", "layer")
        needs = (Q.LAYER_SQ_DIST,)

        def compute(self, r):
            return np.ones_like(r[Q.LAYER_SQ_DIST])

    try:
        model = torch.nn.Linear(3, 2)
        with pytest.raises(ConfigError, match="layer_count needs layer_sq_dist"):
            gradlab.Tracker(model, tmp_path / "s.h5", probes={}, store="sketch", per_layer=False)
        assert not (tmp_path / "s.h5").exists()
    finally:
        Q.unregister(LayerCount.name)


def test_unknown_tracker_option_names_the_nearest():
    with pytest.raises(ConfigError, match='did you mean "per_layer"'):
        gradlab.Tracker(torch.nn.Linear(3, 2), "unused.h5", per_layr=False)
