"""The HTML report: offline, rendered without JavaScript errors in headless Chromium, PNG export."""
from __future__ import annotations

import os
import re

import numpy as np
import plotly.graph_objects as go
import pytest

from tests.browser import chromium_path, load_page
from gradlab.cli import main
from gradlab.report.page import write_report

K = 20
# CI installs Debian chromium (.ci/run) and sets this, so the browser tests cannot silently skip there.
REQUIRE = os.environ.get("GRADLAB_REQUIRE_CHROMIUM") == "1"
needs_chromium = pytest.mark.skipif(chromium_path() is None and not REQUIRE,
                                    reason="Debian chromium not installed (.ci/run installs it)")


def _runs(tmp_path, fake_run):
    top = np.where(np.arange(K) >= 15, 0.7, 1.0)
    middle = np.where((np.arange(K) >= 5) & (np.arange(K) < 10), 0.75, 1.0)
    a = fake_run(tmp_path / "a" / "run.h5", epochs=6, milestones=(3,), batches=K,
                 profiles={"intensity": {0: top, 1: middle}})
    b = fake_run(tmp_path / "b" / "run.h5", epochs=4, milestones=(2,), batches=K, seed=1, status="failed")
    return a, b


@needs_chromium
def test_report_loads_in_chromium_without_errors(tmp_path, fake_run, capsys):
    a, b = _runs(tmp_path, fake_run)
    out = tmp_path / "report.html"
    assert main(["report", str(a), str(b), "--out", str(out), "--perm", "200"]) == 0
    assert f"report: {out}" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    assert page.count("Plotly.newPlot") == page.count("class=\"plotly-graph-div\"") > 10
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1  # plotly.js inlined once
    # the summary answers the planted question, for each run side by side
    assert "Q4 (highest 25%)" in page and "Q2 (25–50th percentile)" in page and "beats chance" in page
    assert "a/run" in page and "b/run" in page and "RuntimeError: boom" in page

    state = load_page(out)
    assert state["errors"] == [], state["errors"]
    assert state["plotly"] and state["missing"] == [] and len(state["rendered"]) == state["total"]
    assert state["total"] == page.count("class=\"plotly-graph-div\"")
    assert state["external"] == [], state["external"]  # nothing fetched: works offline
    assert state["sections"] == ["runs", "summary", "heatmaps", "layers", "norms", "curves", "params", "provenance"]


@needs_chromium
def test_browser_check_catches_errors_and_unrendered_plots(tmp_path):
    """The check above can fail: a page with a thrown error and an empty plot div is reported."""
    from plotly.offline import get_plotlyjs

    bad = tmp_path / "bad.html"
    good = go.Figure(go.Scatter(y=[1, 2]))
    bad.write_text("<html><head><script>" + get_plotlyjs() + "</script></head><body>"
                   + good.to_html(full_html=False, include_plotlyjs=False, div_id="good")
                   + "<div id='empty' class='plotly-graph-div'></div><script>throw new Error('planted');</script>"
                   + "</body></html>", encoding="utf-8")
    state = load_page(bad, timeout=3)
    assert any("planted" in e for e in state["errors"])
    assert state["rendered"] == ["good"] and state["missing"] == ["empty"]


@pytest.mark.parametrize("how", ["BROWSER_PATH points nowhere", "nothing on PATH"])
def test_png_without_browser_writes_html_and_says_so(tmp_path, fake_run, monkeypatch, capsys, how):
    a, _ = _runs(tmp_path, fake_run)
    if how == "nothing on PATH":
        monkeypatch.delenv("BROWSER_PATH", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    else:
        monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium-here"))
    out, png = tmp_path / "r.html", tmp_path / "png"
    assert main(["report", str(a), "--out", str(out), "--png", str(png), "--perm", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "PNG export needs Chromium" in err and f"written to {out}" in err
    assert out.stat().st_size > 1_000_000 and "Phase summary" in out.read_text(encoding="utf-8")
    assert not png.exists() or not list(png.glob("*.png"))


@needs_chromium
def test_png_export_with_chromium(tmp_path, fake_run):
    path = fake_run(tmp_path / "r.h5", epochs=2, milestones=(1,), batches=8, probes=("random",))
    rep = write_report([path], tmp_path / "r.html", png_dir=tmp_path / "png", n_perm=20)
    assert len(rep.pngs) == rep.figures > 3
    for p in rep.pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, p


@pytest.mark.e2e
def test_param_stats_section_from_real_runs(tmp_path, agc_run, fake_run):
    """A real AGC run with parameter statistics (the session's shared agc_run, tests/conftest.py)
    gets the mean/var/grad_norm and AGC-lambda figures."""
    out = tmp_path / "r.html"
    rep = write_report([agc_run, fake_run(tmp_path / "q.h5", epochs=1, batches=8)], out, n_perm=10)
    page = out.read_text(encoding="utf-8")
    for fig_id in ("params_mean", "params_var", "params_grad_norm", "agc_lambda"):
        assert f'id="fig-{fig_id}' in page, fig_id
    assert rep.figures > 4


def test_report_of_a_run_with_no_committed_epoch(tmp_path, fake_run, capsys):
    """A run that has just started (epochs_done = 0) still gets a page, saying there is nothing yet."""
    path = fake_run(tmp_path / "new.h5", epochs=3, commit=0, extra_rows=1, status="running")
    out = tmp_path / "r.html"
    assert main(["report", str(path), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "No committed epochs" in page and "0 / 3" in page and 'class="plotly-graph-div"' not in page
    assert main(["report", str(tmp_path / "missing.h5"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_png_copy_has_no_menus_and_the_page_keeps_them():
    """A static image cannot use the heatmaps' D / D-in-units buttons: the PNG export drops the
    menus from a copy; the interactive page's figure keeps them."""
    import plotly.graph_objects as go

    from gradlab.report.png import _static

    fig = go.Figure(layout={"updatemenus": [{"buttons": [{"label": "D", "method": "restyle", "args": [{}]}]}]})
    assert len(_static(fig).layout.updatemenus) == 0 and len(fig.layout.updatemenus) == 1
