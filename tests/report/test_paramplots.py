from __future__ import annotations

import pytest

from gradlab import open_run
from gradlab.report import plots
from gradlab.errors import GradlabError


@pytest.fixture(scope="module")
def runs(bn_run, agc_run):
    """The session's shared BN and AGC runs (tests/conftest.py): 2 epochs of 4 steps, parameter
    statistics every 4 steps."""
    opened = [open_run(p) for p in (bn_run, agc_run)]
    yield opened
    for r in opened:
        r.close()


def _legend_names(fig):
    return [t.name for t in fig.data if t.showlegend]


@pytest.mark.e2e
def test_param_stats_facets_by_kind_and_names_runs(runs):
    fig = plots.param_stats(runs, "mean", names=["BN", "AGC"])
    kinds = [a.text for a in fig.layout.annotations]
    assert kinds[0] == "conv.weight" and {"bn.weight", "agc.lambda", "agc.gamma", "bias"} <= set(kinds)
    assert _legend_names(fig) == ["BN", "AGC"]  # one legend entry per run
    dashes = {t.legendgroup: t.line.dash for t in fig.data}
    assert dashes == {"BN": "solid", "AGC": "dashdot"}
    # smallcnn has <= 12 tensors per kind: one line per (run, layer)
    n_layers = sum(len(r.layers()) for r in runs)
    assert len(fig.data) == n_layers
    assert all(len(t.x) == 3 for t in fig.data)  # steps 0, 4, 8 (4 steps per epoch)


@pytest.mark.e2e
def test_param_stats_kind_aggregate_and_layer_view(runs):
    fig = plots.param_stats(runs, "grad_norm", kinds=["conv.weight"], by="kind")
    assert len(fig.data) == 2 and fig.layout.yaxis.type == "log"
    layers = runs[0].layers()
    conv = layers[layers.kind == "conv.weight"].layer
    df = runs[0].param_stats(["grad_norm"])
    last = df[(df.step == df.step.max()) & df.layer.isin(conv)].value
    assert fig.data[0].y[-1] == pytest.approx(float((last ** 2).sum() ** 0.5))
    fig = plots.param_stats(runs[1], "var", x="layer")
    assert len(fig.data) == len({a.text for a in fig.layout.annotations})  # one line per kind panel
    with pytest.raises(ValueError, match="not in these runs"):
        plots.param_stats(runs[0], "mean", kinds=["agc.lambda"])


@pytest.mark.e2e
def test_agc_lambda_plot(runs):
    fig = plots.agc_lambda(runs[1])
    n_agc = int((runs[1].layers().kind == "agc.lambda").sum())
    assert n_agc == 3 and len(fig.data) == n_agc + 1
    assert fig.data[0].y[0] == 1.0  # λ starts at 1
    with pytest.raises(GradlabError, match='model.norm = "agc"'):
        plots.agc_lambda(runs[0])
