"""Plugins: a user's metric, gradient order, quantity and training policy come from their own
package, by the name an installed plugin adds (entry-point group ``gradlab.plugins``) or by an
import path, with no change to gradlab (examples/gradlab-example-plugin).

The installed-plugin test needs the example installed: .ci/run does
``pip install -e examples/gradlab-example-plugin`` after install.sh and sets
GRADLAB_REQUIRE_PLUGIN=1, so that there it must run; elsewhere it skips unless installed."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import gradlab
from gradlab import registry
from gradlab.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gradlab-example-plugin"
STUDY = EXAMPLE / "study.toml"
NAMES = {"metric": "contrast", "gradient order": "loss_desc", "quantity": "distance_over_full",
         "training policy": "low_first"}


def _installed() -> bool:
    return any(ep.value.startswith("gradlab_example_plugin") for ep in metadata.entry_points(group="gradlab.plugins"))


def _check_run(path: Path, contrast: str, loss_desc: str, quantity: str) -> None:
    with gradlab.open_run(path) as run:
        assert run.status == "complete"
        assert {"random", contrast, loss_desc} <= set(run.probes)
        for probe in ("random", contrast, loss_desc):
            table = run.quantity(probe, quantity)
            assert np.isfinite(table[quantity]).all() and (table[quantity] > 0).all()
            meta = run.quantities(probe).set_index("quantity").loc[quantity]
            assert meta.units == "1" and "|g_k - G| / |G|" in meta.description
        # D / |G| is what the file's own D and |G| give
        d, full = run.distances("random")["distance"].to_numpy(), run.quantity("random", "full_norm")
        ratio = run.quantity("random", quantity)[quantity].to_numpy()
        np.testing.assert_allclose(ratio, d / np.repeat(full["full_norm"].to_numpy(), len(d) // len(full)),
                                   rtol=1e-9)


@pytest.mark.e2e
def test_a_study_names_a_users_code_by_import_path(tmp_path, monkeypatch):
    """Not installed: each of the four named by its import path, the package's folder on sys.path."""
    from gradlab.config import load_config
    from gradlab.train.runner import Runner

    monkeypatch.syspath_prepend(str(EXAMPLE))
    m, o = "gradlab_example_plugin.metric:Contrast", "gradlab_example_plugin.order:LossDescending"
    cfg = load_config(STUDY, overrides=[
        f'track.probes=["random", "{m}", "{o}"]',
        'track.quantities=["gradlab_example_plugin.quantity:DistanceOverFull"]',
        'train.policy="gradlab_example_plugin.policy:low_first"', f'train.policy_metric="{m}"',
        f'output.path="{tmp_path / "run.h5"}"'])
    out = Runner(cfg, progress=False, log=lambda msg: None).run()
    _check_run(Path(out), m, o, "distance_over_full")


@pytest.mark.e2e
def test_an_installed_plugin_adds_its_names_to_gradlab_run(tmp_path):
    """``pip install -e examples/gradlab-example-plugin`` then ``gradlab run`` on its study file."""
    if not _installed():
        if os.environ.get("GRADLAB_REQUIRE_PLUGIN"):
            pytest.fail("GRADLAB_REQUIRE_PLUGIN is set but gradlab-example-plugin is not installed")
        pytest.skip("pip install -e examples/gradlab-example-plugin to run (.ci/run does)")
    out = tmp_path / "plugin.h5"
    proc = subprocess.run([sys.executable, "-m", "gradlab", "run", str(STUDY), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _check_run(out, "contrast", "loss_desc", "distance_over_full")
    listed = subprocess.run([sys.executable, "-m", "gradlab", "names"], capture_output=True, text=True, check=True)
    for concept, name in NAMES.items():
        assert f"  {name:<16} gradlab-example-plugin" in listed.stdout
        assert registry.ALL[concept].check(name).origin == "gradlab-example-plugin"
        assert name not in registry.ALL[concept]  # a plugin's names are not gradlab's own (docs list these)


# --------------------------------------------------------------------------- the mechanism, without installing

class _EP:
    """A stand-in for an importlib.metadata entry point of group gradlab.plugins."""

    def __init__(self, fn, name="fake"):
        self.name, self.value, self.dist, self._fn = name, "fake_plugin:entries", None, fn

    def load(self):
        return self._fn


@pytest.fixture
def fake_plugins(monkeypatch):
    """Install entry points for one test: ``fake_plugins(fn, ...)``; the cache is cleared after."""
    def install(*fns):
        monkeypatch.setattr(metadata, "entry_points", lambda group: [_EP(f) for f in fns])
        registry.plugin_entries.cache_clear()

    yield install
    registry.plugin_entries.cache_clear()


def test_a_plugin_entry_point_adds_names_that_resolve(fake_plugins):
    fake_plugins(lambda: {"metric": [registry.entry("bright", "gradlab.metrics.intensity:Intensity", "x")]})
    e = registry.METRICS.check("bright")
    assert e.origin == "fake_plugin:entries" and "bright" in registry.METRICS.known()
    assert "bright" not in registry.METRICS and "bright" in registry.probe_orders()
    registry.check_probe("bright")


def test_a_broken_or_clashing_plugin_is_one_config_error(fake_plugins):
    fake_plugins(lambda: 1 / 0)
    with pytest.raises(ConfigError, match="failed to load: ZeroDivisionError"):
        registry.METRICS.check("anything")
    fake_plugins(lambda: {"metric": [registry.entry("intensity", "x:y")]})
    with pytest.raises(ConfigError, match="redefines the built-in metric 'intensity'"):
        registry.METRICS.known()
    fake_plugins(lambda: {"metrik": []})
    with pytest.raises(ConfigError, match="unknown concept 'metrik'"):
        registry.METRICS.known()


def test_scoped_names_leave_no_trace():
    before = registry.GRADIENT_ORDERS.names()
    with registry.GRADIENT_ORDERS.scoped(registry.entry("loss_too", "gradlab.track.gradorders:Loss")):
        assert registry.is_gradient_order("loss_too")
    assert registry.GRADIENT_ORDERS.names() == before and not registry.is_gradient_order("loss_too")
    with pytest.raises(ValueError, match="already registered"):
        with registry.METRICS.scoped(registry.entry("hsv", "x:y")):
            pass


def test_an_import_path_of_the_wrong_kind_or_module_is_refused():
    with pytest.raises(ConfigError, match="unknown order"):  # a metric class is not a gradient order, and so on
        registry.check_probe("gradlab.quantities:BatchNorm")
    assert not registry.is_gradient_order("gradlab.metrics.intensity:Intensity")
    assert registry.METRICS.check("gradlab.metrics.intensity:Intensity").origin == "import path"
    with pytest.raises(ConfigError, match="metric = 'no_such_pkg.mod:Thing': cannot import module 'no_such_pkg.mod'"):
        registry.METRICS.check("no_such_pkg.mod:Thing")


def test_a_runs_own_quantity_reaches_xarray(tmp_path):
    """A quantity outside gradlab's table keeps its description, units and dimensions in
    ``Run.to_xarray`` (read from the file's own attributes)."""
    import torch

    from gradlab import quantities as Q

    class Ratio(Q.Quantity):
        name, units, description = "ratio_k", "1", "|g_k - G| / |g_k|"
        needs = (Q.SQ_DIST, Q.SQ_NORM)

        def compute(self, r):
            return np.sqrt(r[Q.SQ_DIST] / r[Q.SQ_NORM])

    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]
    model = torch.nn.Linear(4, 2)
    with gradlab.Tracker(model, tmp_path / "r.h5", probes={"random": batches}, param_stats="off",
                         quantities=[Ratio]) as tracker:
        tracker.epoch_start()
        tracker.epoch_end(lr=0.1)
    with gradlab.open_run(tmp_path / "r.h5") as run:
        ds = run.to_xarray("random")
    assert ds["ratio_k"].dims == ("epoch", "batch") and ds["ratio_k"].attrs == {"description": "|g_k - G| / |g_k|",
                                                                               "units": "1"}


def test_orders_batches_takes_a_users_metric_by_import_path(monkeypatch):
    import torch

    monkeypatch.syspath_prepend(str(EXAMPLE))
    images = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
    images[4:, :, ::2] = 255  # the last four images have contrast, the first four none
    data = [(img, 0) for img in images.flip(0)]
    probe = gradlab.orders.batches(data, "gradlab_example_plugin.metric:Contrast", batch_size=4)
    np.testing.assert_allclose(probe.batch_score, [0.0, 127.5])  # the flat images first: ascending contrast


def test_gradlab_names_lists_every_concept(capsys):
    from gradlab.cli import main

    assert main(["names"]) == 0
    out = capsys.readouterr().out
    for concept, reg in registry.ALL.items():
        assert f"{concept} ({reg.key}; or an import path package.module:Name):" in out
    assert "  intensity        gradlab" in out and "  batch_norm       gradlab" in out
