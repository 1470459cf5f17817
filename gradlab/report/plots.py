"""Plots: pure functions from a ``Run`` (stored data only) to plotly Figures.

Colour follows the paper: light = close to the full gradient, dark = far.

    >>> import gradlab
    >>> with gradlab.open_run(path) as run:  # path: a small run of a linear model
    ...     fig = gradlab.plots.heatmap(run, probe="sum", phase=0)
    >>> fig.data[0].type, fig.data[0].z.shape  # phase 0: 2 epochs x 4 batches
    ('heatmap', (2, 4))
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from gradlab.report.units import CONTROL, has_control, in_own_units, in_random_units
from gradlab.runfile.reader import Run

if TYPE_CHECKING:
    import pandas as pd

COLORSCALE = "Blues"


def _si(v: float) -> str:
    """Compact tick text: 3 significant digits with k/M suffixes (148k rather than 1.480e+05)."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div * 0.9995:  # values that .3g would round up to 1000 too
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def quantile_ticks(score: np.ndarray, step: int = 10) -> tuple[list[int], list[str]]:
    """x-axis ticks at 0, step, ..., 100 % of the batch axis, labelled with the batch score there.

    Batches of a metric order are sorted by score, so the tick at p % shows the p-th
    percentile of the batch scores (for ``random``, the batch number).
    """
    k = len(score)
    if k == 0:
        return [], []
    pcts = np.arange(0, 101, step)
    pos = np.round(pcts / 100 * (k - 1)).astype(int)
    vals, text, seen = [], [], set()
    for p, i in zip(pcts, pos):
        if i in seen:
            continue
        seen.add(i)
        vals.append(int(i))
        text.append(f"{_si(float(score[i]))}<br><sub>{p}%</sub>")
    return vals, text


def _heatmap_figure(z: np.ndarray, epochs: np.ndarray, score: np.ndarray, score_label: str, title: str,
                    colorbar: str, customdata: np.ndarray | None, hover: str, tick_step: int = 10) -> go.Figure:
    """The D heatmaps' look: z[e, k] with y = epochs (first at the top), x = batches in probe
    order labelled by score quantiles, light = close."""
    tickvals, ticktext = quantile_ticks(score, tick_step)
    fig = go.Figure(go.Heatmap(
        z=z, x=np.arange(len(score)), y=epochs, colorscale=COLORSCALE, customdata=customdata,
        colorbar=dict(title=dict(text=colorbar, side="right")), hovertemplate=hover,
    ))
    fig.update_layout(
        title=dict(text=title),
        xaxis=dict(title=f"batch score quantiles: {html.escape(score_label)} (at % of batches)",
                   tickvals=tickvals, ticktext=ticktext),
        # whole epochs only: about 10 ticks whatever the phase length (50 epochs -> every 5th)
        yaxis=dict(title="epoch", autorange="reversed", tickmode="linear",
                   tick0=int(epochs[0]) if len(epochs) else 0, dtick=max(1, -(-len(epochs) // 10))),
        template="plotly_white", height=max(280, 80 + 18 * len(epochs)), margin=dict(t=60, b=80, l=60, r=20),
    )
    return fig


def _phase_title(run: Run, probe: str, phase: int, epochs: np.ndarray) -> str:
    span = f"epochs {epochs[0]}–{epochs[-1]}, lr {run.phase_lr(phase):g}" if len(epochs) else "no epochs yet"
    return f"<b>{html.escape(probe)}</b> — phase {phase} ({span})"


def heatmap(run: Run, probe: str, phase: int = 0, measure: str = "l2", tick_step: int = 10) -> go.Figure:
    """D[e, k] for the epochs of one training phase; x = batches in order, labelled by score quantiles."""
    epochs = run.phase_epochs(phase)
    d = run.distance_matrix(probe, measure)[epochs] if len(epochs) else np.zeros((0, 0))
    score = run.batch_scores(probe, epochs)  # a per-epoch order: each batch's mean score over the phase
    custom = run.batch_score_matrix(probe)[epochs] if d.size else None  # hover: the epoch's own score
    hover = "epoch %{y}<br>batch %{x}<br>score %{customdata:.4g}<br>D %{z:.4g}<extra></extra>"
    return _heatmap_figure(d, epochs, score, _score_label(run, probe), _phase_title(run, probe, phase, epochs),
                           f"D ({measure})", custom, hover, tick_step)


def _score_label(run: Run, probe: str) -> str:
    return run.score_label(probe) + ("; order rebuilt each epoch, phase mean" if run.is_per_epoch(probe) else "")


def _seed_stack(runs: Sequence[Run], probe: str, epochs: np.ndarray, measure: str = "l2") -> tuple[np.ndarray, bool]:
    """``[S, E, K]``: every seed's D of ``probe`` at ``epochs`` in the common unit (D / that
    seed's random control mean D at the same epoch), and whether that unit was used: when a
    seed lacks the control, every seed is in its own epoch mean instead (the within-order
    unit), so the seeds still average in one unit."""
    common = all(has_control(r, measure) for r in runs)
    rel = [in_random_units(r, probe, measure) if common else in_own_units(r.distance_matrix(probe, measure))
           for r in runs]
    return np.stack([x[epochs] for x in rel]), common


def seed_mean_heatmap(runs: Sequence[Run], probe: str, phase: int = 0, measure: str = "l2",
                      tick_step: int = 10) -> go.Figure:
    """D[e, k] of ``probe`` in ``phase`` averaged over seeds of one study, cell by cell, in the
    common unit (``_seed_stack``); hover shows the seeds' min–max of the cell.

    Epochs are the first run's of the phase that every seed has committed (the seeds share
    the schedule); batch scores and labels are the first run's (same data order per seed)."""
    first = runs[0]
    epochs = first.phase_epochs(phase)
    epochs = epochs[epochs < min(r.epochs_done for r in runs)]
    rel, common = _seed_stack(runs, probe, epochs, measure)
    score = first.batch_scores(probe, epochs)
    unit = "D / random mean" if common else "D / own epoch mean"
    n = len(runs)
    # float32 halves the page; customdata[e, k] = (batch score, seed min, seed max)
    spread = np.stack([first.batch_score_matrix(probe)[epochs], rel.min(axis=0), rel.max(axis=0)], axis=-1)
    title = _phase_title(first, probe, phase, epochs) + f", mean of {n} seeds" + (
        "" if common else f" (unit: own epoch mean; not every seed has the {CONTROL} probe)")
    hover = ("epoch %{y}<br>batch %{x}<br>score %{customdata[0]:.4g}<br>" + unit + ", seed mean %{z:.3f}<br>"
             "seeds min–max %{customdata[1]:.3f}–%{customdata[2]:.3f}<extra></extra>")
    return _heatmap_figure(rel.mean(axis=0).astype(np.float32), epochs, score, _score_label(first, probe), title,
                           f"{unit} (mean of {n} seeds)", spread.astype(np.float32), hover, tick_step)


def heatmaps(run: Run, measure: str = "l2") -> list[go.Figure]:
    """One heatmap per (probe, phase), probes in name order."""
    return [heatmap(run, p, ph, measure) for p in run.probes for ph in range(run.num_phases)
            if measure in run.measures(p)]


def figures_html(figures: list[go.Figure], title: str, intro: str = "") -> str:
    """A self-contained HTML page (plotly.js inlined once; works offline)."""
    parts = []
    for i, fig in enumerate(figures):
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False}))
    body = "\n".join(f'<div class="fig">{p}</div>' for p in parts) or "<p>No committed epochs yet.</p>"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}.fig{margin-bottom:2em}</style>"
            f"</head><body><h1>{html.escape(title)}</h1>{intro}{body}</body></html>")


def write_heatmaps(run: Run, path: str | Path, measure: str = "l2") -> Path:
    """Write every heatmap of ``run`` into one offline HTML file."""
    path = Path(path)
    intro = (f"<p>{html.escape(str(run.path))}: {run.epochs_done} epochs, status {run.status}. "
             f"D = |g<sub>k</sub> − G| at the epoch-start parameters; light = close to the full gradient.</p>")
    page = figures_html(heatmaps(run, measure), f"gradlab heatmaps — {run.path.stem}", intro)
    path.write_text(page, encoding="utf-8")
    return path


from gradlab.report.paramplots import agc_lambda, param_stats  # noqa: E402,F401  (issue #4: parameter statistics)


KIND_COLOURS = {"control": "#7f7f7f", "metric": "#1f77b4", "gradient": "#d62728"}


def reference_figure(table: "pd.DataFrame", phase: int) -> go.Figure:
    """One phase of ``gradlab.report.compare.reference_comparison`` on one axis: every order x
    cut's mean D (circle, 95% interval over seeds when given) and best score bin (diamond), in
    units of the random control's mean D; the dotted line at 1 is a typical random batch."""
    t = table[table.phase == phase].sort_values("mean_rel", ascending=False)
    fig = go.Figure()
    for kind, colour in KIND_COLOURS.items():
        g = t[t.kind == kind]
        if g.empty:
            continue
        err = dict(type="data", array=(g.mean_ci_high - g.mean_rel).to_numpy(),
                   arrayminus=(g.mean_rel - g.mean_ci_low).to_numpy(), visible=bool(g.mean_ci_high.notna().any()))
        fig.add_trace(go.Scatter(x=g.mean_rel, y=g.probe, mode="markers", name=f"{kind}: mean over batches",
                                 marker=dict(color=colour, size=9), error_x=err,
                                 hovertemplate="%{y}<br>mean D / random %{x:.3f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=g.best_rel, y=g.probe, mode="markers", name=f"{kind}: best score bin",
                                 marker=dict(color=colour, size=9, symbol="diamond-open", line=dict(width=2)),
                                 hovertemplate="%{y}<br>best bin D / random %{x:.3f}<extra></extra>"))
    fig.add_vline(x=1.0, line=dict(color="#999999", dash="dot"))
    n_seeds = int(t.n_seeds.max()) if len(t) else 0
    fig.update_layout(
        title=(f"Phase {phase}: every order and cut in one unit"
               + (f" ({n_seeds} seeds, 95% CI)" if n_seeds > 1 else "")),
        xaxis=dict(title="D / random control's mean D (1 = typical random batch; left = closer)", type="log"),
        yaxis=dict(title="", categoryorder="array", categoryarray=list(t.probe)),
        template="plotly_white", height=max(300, 110 + 26 * len(t)), legend=dict(orientation="h", y=-0.25),
        margin=dict(l=130, r=20, t=60, b=110))
    return fig
