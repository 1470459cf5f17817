"""A run in Jupyter: ``Run._repr_html_`` and ``run.plot`` (the report's own plotly figures).

    run = gradlab.open_run("runs/mine.h5")
    run                                   # what the run is, its epochs, its probes, its verdicts so far
    run.plot.heatmap("intensity")         # plotly figures, the ones the HTML report shows
    run.plot.distances()                  # D per score bin in the common unit, one line per probe and phase
    run.plot.param_stats("grad_norm")     # per-layer parameter statistics
    gradlab.report.summary.phase_summary(run)  # a DataFrame: pandas renders it as a table

Importing this module registers both on ``gradlab.runfile.reader.Run`` (``gradlab.runfile.display``);
``gradlab.open_run`` and ``gradlab.Run`` import it. The verdicts in the HTML use fewer
permutations than ``gradlab report`` (``PERMUTATIONS``), so that a run shows in a second.
"""
from __future__ import annotations

import html
from typing import Any

from gradlab import registry
from gradlab.runfile.display import register
from gradlab.runfile.reader import Run, open_run

__all__ = ["Run", "RunPlots", "open_run", "run_html"]

PERMUTATIONS = 500  # of the verdicts shown in a notebook (gradlab report: 2000)


def _e(x: object) -> str:
    return html.escape(str(x))


class RunPlots:
    """``run.plot``: the report's own figures of one run (plotly ``go.Figure``, shown by Jupyter)."""

    def __init__(self, run: Run):
        self.run = run

    def heatmap(self, probe: str, phase: int = 0, measure: str = "l2") -> Any:
        """D[e, k] of ``probe`` in the common unit over one phase (``gradlab.plots.heatmap``)."""
        from gradlab.report import plots

        return plots.heatmap(self.run, probe, phase=phase, measure=measure)

    def distances(self, measure: str = "l2", bins: int = 4, n_perm: int = PERMUTATIONS) -> Any:
        """Mean D per score quantile bin, one panel per phase, one line per probe: the phase
        summary's profile (the report's "summary" figure)."""
        from gradlab.report.figures import summary_profile_figure
        from gradlab.report.summary import phase_summary

        summary = phase_summary(self.run, measure=measure, bins=bins, n_perm=n_perm)
        fig = summary_profile_figure({self.run.path.stem: summary}, bins, self.run.probes, measure)
        if fig is None:
            raise KeyError(f"{self.run.path}: no committed epoch with {measure} distances to plot yet")
        return fig

    def param_stats(self, stat: str = "mean", **kwargs: Any) -> Any:
        """Per-layer parameter statistics over training (``gradlab.report.paramplots.param_stats``)."""
        from gradlab.report.paramplots import param_stats

        return param_stats(self.run, stat=stat, **kwargs)


def _probe_rows(run: Run) -> str:
    rows = []
    for p in run.probes:
        rows.append(f"<tr><td>{_e(p)}</td><td>{_e(registry.order_kind(p))}</td><td>{run.num_batches(p)}</td>"
                    f"<td>{_e(', '.join(run.measures(p)))}</td></tr>")
    return "".join(rows)


def _verdicts(run: Run) -> str:
    """The phase summary's verdicts so far (committed epochs only), or why there are none."""
    if not run.epochs_done or not run.probes:
        return "<p>No verdicts yet: no committed epoch.</p>"
    import warnings

    from gradlab.report.summary import phase_summary

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a run without the random control: the unit is said in the table
        s = phase_summary(run, n_perm=PERMUTATIONS)
    if not len(s):
        return "<p>No verdicts yet.</p>"
    rows = "".join(f"<tr><td>{_e(r.probe)}</td><td>{r.phase}</td><td>{_e(r.epochs)}</td><td>{_e(r.unit)}</td>"
                   f"<td>{_e(r.best_label)}</td><td>{r.best_rel:.3f}</td><td>{r.p_holm:.3g}</td>"
                   f"<td>{_e(r.verdict)}</td></tr>" for r in s.itertuples())
    return ("<table><tr><th>probe</th><th>phase</th><th>epochs</th><th>unit</th><th>best bin</th>"
            f"<th>best bin D</th><th>p (Holm)</th><th>verdict</th></tr>{rows}</table>"
            f"<p style='font-size:smaller'>{PERMUTATIONS} permutations; <code>gradlab report</code> uses 2000.</p>")


def run_html(run: Run) -> str:
    """The run as HTML for Jupyter: file, status, epochs, final accuracy, probes, verdicts so far."""
    curves = run.train_curves()
    acc = f"{curves['test_acc'].iloc[-1]:.4f}" if "test_acc" in curves and len(curves) else "not recorded"
    failure = f" ({_e(run.failure)})" if run.failure else ""
    return (f"<div class='gradlab-run'><b>gradlab run</b> <code>{_e(run.path)}</code><br>"
            f"status <b>{_e(run.status)}</b>{failure} · <b>{run.epochs_done}</b> epochs committed · "
            f"{run.num_phases} phase(s), milestones {_e(run.milestones)} · final test accuracy {acc} · "
            f"schema {_e(run.schema)}"
            f"<table><tr><th>probe</th><th>kind</th><th>batches</th><th>measures</th></tr>{_probe_rows(run)}</table>"
            f"<b>Verdicts so far</b>{_verdicts(run)}</div>")


register("html", run_html)
register("plot", RunPlots)
