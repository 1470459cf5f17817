"""Heatmap x axis: batch-score quantile ticks."""
from __future__ import annotations

import numpy as np

from gradlab import open_run
from gradlab.report import plots
from gradlab.report.plots import quantile_ticks
from gradlab.train.runner import Runner


def test_quantile_ticks_positions_and_labels():
    score = np.linspace(100.0, 200.0, 195)  # sorted batch scores, 195 batches as in the paper
    vals, text = quantile_ticks(score)
    assert vals == [round(p / 100 * 194) for p in range(0, 101, 10)]
    assert text[0].startswith("100<br>") and text[-1].startswith("200<br>") and "50%" in text[5]
    assert text[5].startswith(f"{score[97]:.3g}")
    vals, text = quantile_ticks(np.arange(3.0))  # fewer batches than ticks: no duplicates
    assert vals == [0, 1, 2] and len(text) == 3
    assert quantile_ticks(np.zeros(0)) == ([], [])


def test_heatmap_uses_quantile_ticks(tiny):
    cfg = tiny(track={"probes": ["hsv"]}, data={"subset": 128}, train={"epochs": 1, "milestones": []})
    out = Runner(cfg, progress=False, log=lambda s: None).run()
    with open_run(out) as run:
        fig = plots.heatmap(run, "hsv", 0)
        want_vals, want_text = quantile_ticks(run.batch_scores("hsv"))
        assert list(fig.layout.xaxis.tickvals) == want_vals and list(fig.layout.xaxis.ticktext) == want_text
        assert "quantiles" in fig.layout.xaxis.title.text and "hue" in fig.layout.xaxis.title.text


def test_tick_text_is_compact():
    from gradlab.report.plots import _si

    assert [_si(v) for v in (0, 52.7, 0.2104, 999.7, 49490, 3.66e5, 12345678, -5e3)] == \
        ["0", "52.7", "0.21", "1k", "49.5k", "366k", "12.3M", "-5k"]


def test_heatmap_epoch_axis_has_whole_epochs(tmp_path, fake_run):
    from gradlab import open_run
    from gradlab.report import plots

    path = fake_run(tmp_path / "r.h5", epochs=30, milestones=(2,), batches=8)
    with open_run(path) as run:
        short, long = plots.heatmap(run, run.probes[0], phase=0), plots.heatmap(run, run.probes[0], phase=1)
    assert short.layout.yaxis.tickmode == "linear" and short.layout.yaxis.dtick == 1 and short.layout.yaxis.tick0 == 0
    assert long.layout.yaxis.dtick == 3 and long.layout.yaxis.tick0 == 2  # 28 epochs: every 3rd, from epoch 2
