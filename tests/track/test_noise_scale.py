"""Noise-scale components: stored per epoch, NaN ratio where undefined, pooled per phase."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import pandas as pd

from gradlab import open_run
from gradlab.report.summary import pooled_noise_scale
from gradlab.train.runner import Runner


def test_pooled_noise_scale_against_numpy():
    rng = np.random.default_rng(0)
    g2 = np.array([2.0, -1.0, 0.5, 3.0, 1.0, -0.2])
    tr = rng.uniform(1, 5, 6)
    df = pd.DataFrame({"probe": "random", "epoch": range(6), "phase": [0, 0, 0, 1, 1, 1], "g2": g2, "trace": tr,
                       "noise_scale": np.where(g2 > 0, tr / np.where(g2 > 0, g2, 1), np.nan)})
    out = pooled_noise_scale(df)
    np.testing.assert_allclose(out.pooled, [tr[:3].mean() / g2[:3].mean(), tr[3:].mean() / g2[3:].mean()])
    assert list(out.undefined) == [1, 1]
    np.testing.assert_allclose(out.median_epoch, [np.median((tr / g2)[[0, 2]]), np.median((tr / g2)[[3, 4]])])
    neg = pooled_noise_scale(df.assign(g2=-1.0, noise_scale=np.nan))
    assert neg.pooled.isna().all() and list(neg.undefined) == [3, 3]


@pytest.mark.e2e
def test_run_stores_components_and_nan_for_undefined(tiny):
    """The stored components reproduce the stored ratio, NaN exactly where g2 <= 0, and the
    components match the definition on the stored distances."""
    cfg = tiny(model={"norm": "none"}, train={"epochs": 3}, track={"probes": ["random"]})
    out = Runner(cfg, progress=False, log=lambda s: None).run()
    with h5py.File(out) as f:
        g2, tr, ns = (f[f"probes/random/{n}"][()] for n in ("noise_g2", "noise_trace", "noise_scale"))
        d, full = f["probes/random/distance_l2"][()], f["probes/random/full_norm"][()]
    m, n = 32, 32 * d.shape[1]
    want_tr = m * n / (n - m) * (d ** 2).mean(1)
    np.testing.assert_allclose(tr, want_tr, rtol=1e-9)
    np.testing.assert_allclose(g2, full ** 2 - want_tr / n, rtol=1e-6, atol=1e-12)
    assert np.array_equal(np.isnan(ns), g2 <= 0) and not np.isinf(ns).any()
    np.testing.assert_allclose(ns[g2 > 0], (tr / g2)[g2 > 0])
    with open_run(out) as run:
        df = run.noise_scale("random")
        assert {"g2", "trace"} <= set(df.columns) and len(df) == 3
