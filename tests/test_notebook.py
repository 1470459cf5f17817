"""The docs' notebook tutorial runs (nbclient, as CI does), and a Run shows itself in Jupyter:
its HTML and run.plot's figures are the report's own."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import gradlab

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "notebook.ipynb"


def test_the_notebook_tutorial_executes_with_its_outputs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")  # stored without outputs
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    htmls = [o.data["text/html"] for o in outputs if "data" in o and "text/html" in o.data]
    assert any("gradlab-run" in h and "Verdicts so far" in h and "bright" in h for h in htmls)  # the Run
    plots = [h for h in htmls if "plotly" in h.lower() and "Plotly.newPlot" in h]
    assert len(plots) >= 3  # heatmap, distances, param_stats
    assert list(tmp_path.iterdir()) == []  # the tutorial writes its run to a temporary folder, not beside itself


def _run(path):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    b = [(torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(4)]
    with gradlab.Tracker(nn.Linear(4, 2), path, {"random": b, "mine": list(reversed(b))}) as t:
        for e in range(2):
            t.epoch_start()
            t.epoch_end(lr=0.1, test_acc=0.5 + e / 10)
    return gradlab.open_run(path)


def test_run_html_and_plots_are_the_reports(tmp_path):
    from gradlab.report import plots
    from gradlab.report.paramplots import param_stats

    with _run(tmp_path / "r.h5") as run:
        h = run._repr_html_()
        for text in ("complete", "<b>2</b> epochs committed", "mine", "random", "control", "Verdicts so far",
                     "final test accuracy 0.6000"):
            assert text in h, text
        assert json.loads(run.plot.heatmap("mine").to_json()) == json.loads(plots.heatmap(run, "mine").to_json())
        assert json.loads(run.plot.param_stats("var").to_json()) == json.loads(param_stats(run, "var").to_json())
        fig = run.plot.distances()
        assert {t.name for t in fig.data} == {"mine", "random (control)"}


def test_a_run_with_a_markup_name_is_escaped(tmp_path):
    g = torch.Generator().manual_seed(0)
    b = [(torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(2)]
    with gradlab.Tracker(nn.Linear(4, 2), tmp_path / "r.h5", {"random": b, "<img src=x onerror=alert(1)>": b}) as t:
        t.epoch_start()
        t.epoch_end(lr=0.1)
    with gradlab.open_run(tmp_path / "r.h5") as run:
        h = run._repr_html_()
        assert "<img" not in h and "&lt;img src=x onerror=alert(1)&gt;" in h
