"""Paper mode (train on a metric's sorted fixed order and probe it) and probe mode
(train shuffled, probe every listed order at the same theta_e, without augmentation)."""
from __future__ import annotations

import numpy as np
import pytest

from gradlab import open_run
from gradlab.train import runner
from gradlab.metrics import get_metric
from gradlab.metrics import lpips_weights as lw
from gradlab.train.runner import Runner, build_study


@pytest.fixture
def train_orders(monkeypatch):
    """Records the dataset order each training epoch used."""
    seen = []
    real = runner.train_epoch

    def spy(model, opt, loader, order, *args, **kwargs):
        seen.append(order.clone())
        return real(model, opt, loader, order, *args, **kwargs)

    monkeypatch.setattr(runner, "train_epoch", spy)
    return seen


@pytest.mark.e2e
def test_paper_mode_trains_and_probes_the_sorted_order(tiny, train_orders):
    cfg = tiny(track={"order": "edges", "probes": ["random"]}, data={"augment": False, "subset": 128})
    r = Runner(cfg, progress=False, log=lambda s: None)
    s = r.study
    assert s.train_order.name == "edges" and [p.name for p in s.probes] == ["edges", "random"]
    assert s.probes[0] is s.train_order
    out = r.run()
    m = get_metric("edges")
    scores = m.compute(s.train.images)
    want = m.sort(scores)
    assert len(train_orders) == 2 and all(np.array_equal(o.numpy(), want) for o in train_orders)
    with open_run(out) as run:
        assert run.probes == ["edges", "random"]
        np.testing.assert_array_equal(run.f["probes/edges/index"][()], want)
        bs = run.batch_scores("edges")
        np.testing.assert_allclose(bs, scores[want].reshape(4, 32).mean(1))
        assert np.all(np.diff(bs) >= 0)
        np.testing.assert_array_equal(run.batch_scores("random"), np.arange(4))


def test_paper_mode_does_not_probe_its_order_twice(tiny):
    s = build_study(tiny(track={"order": "hsv", "probes": ["intensity", "hsv", "random"]}))
    assert [p.name for p in s.probes] == ["hsv", "intensity", "random"]


@pytest.mark.e2e
def test_probe_mode_probes_all_orders_at_the_same_theta(tiny, train_orders, tmp_path, monkeypatch):
    probes = ["intensity", "hsv", "edges", "random"]
    if lw.jax_checkpoint() is not None:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setattr(lw, "hub_checkpoint", lambda: tmp_path / "no-hub.pth")
        probes.append("lpips")
    # No BatchNorm and 128 = 4 x 32 images: the full gradient is the mean over all images
    # whatever the order, so equal full norms show one theta_e and un-augmented probes.
    cfg = tiny(track={"order": "shuffle", "probes": probes}, model={"norm": "none"},
               data={"augment": True, "subset": 128})
    out = Runner(cfg, progress=False, log=lambda s: None).run()
    assert len(train_orders) == 2 and not np.array_equal(train_orders[0], train_orders[1])  # reshuffled
    with open_run(out) as run:
        assert run.probes == sorted(probes)
        full = np.array([run.f[f"probes/{p}/full_norm"][()] for p in probes])  # [P, E]
        np.testing.assert_allclose(full, np.broadcast_to(full[0], full.shape), rtol=1e-4)
        loss = np.array([run.f[f"probes/{p}/batch_loss"][()].mean(1) for p in probes])
        np.testing.assert_allclose(loss, np.broadcast_to(loss[0], loss.shape), rtol=1e-5)
        for p in probes:
            idx = run.f[f"probes/{p}/index"][()]
            assert sorted(idx.tolist()) == list(range(128))
            if p != "random":
                assert np.all(np.diff(run.batch_scores(p)) >= 0)
