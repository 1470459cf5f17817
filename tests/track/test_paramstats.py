from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradlab import open_run
from gradlab.config import ModelConfig
from gradlab.errors import ConfigError
from gradlab.track.layout import ParamLayout
from gradlab.models import build_model
from gradlab.track.paramstats import ParamStatsRecorder, Schedule
from gradlab.train.runner import Runner


class Rows:
    """A RunWriter stand-in collecting appended rows."""

    def __init__(self):
        self.rows: dict[str, list] = {}

    def append(self, name, row, index):
        lst = self.rows.setdefault(name, [])
        assert index == len(lst)
        lst.append(np.asarray(row))

    def get(self, name):
        return np.stack(self.rows[name])


def test_schedule_parse_and_config_validation(tiny):
    assert Schedule.parse("epoch") == Schedule(True, 0)
    assert Schedule.parse("every:25") == Schedule(True, 25)
    assert not Schedule.parse("off").enabled
    for bad in ("every:0", "every:", "epochs", "every:-3", "every: 5"):
        with pytest.raises(ConfigError, match="track.param_stats"):
            Schedule.parse(bad)
    with pytest.raises(ConfigError, match="track.param_stats"):
        tiny(track={"param_stats": "every:x"})


def test_recorder_matches_numpy_and_autograd():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="smallcnn", norm="agc")).double()
    layout = ParamLayout.of(model)
    rows = Rows()
    rec = ParamStatsRecorder(model, layout, "every:2", steps_per_epoch=3, append=rows.append)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-2)
    rec.record_init()
    g = torch.Generator().manual_seed(1)
    want_norms = []
    for step in range(3):
        x = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (2,), generator=g)
        params = [dict(model.named_parameters())[n] for n in layout.names]
        ref = torch.autograd.grad(F.cross_entropy(model(x), y), params)  # gradient at theta_{s-1}
        want_norms.append([np.linalg.norm(r.numpy().ravel()) for r in ref])
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        rec.after_step()
    rec.end_epoch()
    np.testing.assert_array_equal(rows.get("params/step"), [0, 2, 3])
    np.testing.assert_allclose(rows.get("params/epoch"), [0, 2 / 3, 1])
    named = dict(model.named_parameters())
    final = [named[n].detach().numpy().ravel() for n in layout.names]
    np.testing.assert_allclose(rows.get("params/mean")[-1], [a.mean() for a in final], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(rows.get("params/var")[-1], [a.var() for a in final], rtol=1e-10, atol=1e-14)
    gn = rows.get("params/grad_norm")
    assert np.all(np.isnan(gn[0]))
    # raw minibatch gradient of the step, not altered by weight decay or momentum
    np.testing.assert_allclose(gn[1], want_norms[1], rtol=1e-9)
    np.testing.assert_allclose(gn[2], want_norms[2], rtol=1e-9)
    kinds = set(layout.kinds)
    assert {"conv.weight", "agc.lambda", "agc.gamma", "agc.beta", "linear.weight", "bias"} <= kinds


@pytest.mark.e2e
def test_run_writes_params_and_reader_tidies(tiny):
    cfg = tiny(track={"enabled": False, "param_stats": "every:3"}, train={"epochs": 2, "batch_size": 32})
    runner = Runner(cfg, progress=False, log=lambda s: None)
    out = runner.run()
    model = runner.study.model
    with open_run(out) as run:
        assert run.has_param_stats
        df = run.param_stats()
        layers = run.layers()
        steps = sorted(df.step.unique())
        assert steps == [0, 3, 6, 8, 9, 12, 15, 16]  # 8 steps per epoch: every 3rd plus the epoch ends
        assert set(df.stat) == {"mean", "var", "grad_norm"}
        assert len(df) == len(steps) * len(layers) * 3
        last = df[(df.step == 16) & (df.stat == "var")].set_index("layer").value
        for name, p in model.named_parameters():
            assert last[name] == pytest.approx(p.detach().double().var(unbiased=False).item(), rel=1e-9, abs=1e-15)
        kinds = dict(zip(layers.layer, layers.kind))
        assert (df.kind == df.layer.map(kinds)).all()
        assert df[df.step > 0].query("stat == 'grad_norm'").value.gt(0).all()
        assert list(df.columns) == ["step", "epoch", "layer", "kind", "depth", "stat", "value"]
        assert run.f["params"].attrs["schedule"] == "every:3"
    # rows of an uncommitted epoch are not returned
    with h5py.File(out, "a") as f:
        f.attrs["epochs_done"] = 1
    with open_run(out) as run:
        assert run.param_stats().epoch.max() == 1.0


def test_param_stats_off_and_missing(tiny):
    out = Runner(tiny(track={"enabled": False, "param_stats": "off"}, train={"epochs": 1, "milestones": []}),
                 progress=False, log=lambda s: None).run()
    with open_run(out) as run:
        assert not run.has_param_stats and run.param_stats().empty
        with pytest.raises(KeyError, match="unknown parameter statistic"):
            run.param_stats(["median"])
