"""Plots: pure functions from a ``Run`` (stored data only) to plotly Figures.

Colour follows the paper: light = close to the full gradient, dark = far.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from .analysis import Run
from .config import lr_at, TrainConfig

COLORSCALE = "Blues"


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"


def heatmap(run: Run, probe: str, phase: int = 0, measure: str = "l2", n_ticks: int = 9) -> go.Figure:
    """D[e, k] for the epochs of one training phase; x = batches in order, labelled by score."""
    epochs = run.phase_epochs(phase)
    d = run.distance_matrix(probe, measure)[epochs] if len(epochs) else np.zeros((0, 0))
    score = run.batch_scores(probe)
    k = len(score)
    ticks = np.unique(np.linspace(0, k - 1, min(n_ticks, k)).round().astype(int)) if k else np.array([], int)
    custom = np.broadcast_to(score, d.shape) if d.size else None
    fig = go.Figure(go.Heatmap(
        z=d, x=np.arange(k), y=epochs, colorscale=COLORSCALE, customdata=custom,
        colorbar=dict(title=dict(text=f"D ({measure})", side="right")),
        hovertemplate="epoch %{y}<br>batch %{x}<br>score %{customdata:.4g}<br>D %{z:.4g}<extra></extra>",
    ))
    train = TrainConfig(**run.config["train"])
    span = f"epochs {epochs[0]}–{epochs[-1]}, lr {lr_at(int(epochs[0]), train):g}" if len(epochs) else "no epochs yet"
    fig.update_layout(
        title=dict(text=f"<b>{html.escape(probe)}</b> — phase {phase} ({span})"),
        xaxis=dict(title=f"batch, labelled by {html.escape(run.score_label(probe))}",
                   tickvals=ticks.tolist(), ticktext=[_fmt(score[i]) for i in ticks]),
        yaxis=dict(title="epoch", autorange="reversed"),
        template="plotly_white", height=max(260, 60 + 18 * len(epochs)), margin=dict(t=60, b=60, l=60, r=20),
    )
    return fig


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
    path.write_text(figures_html(heatmaps(run, measure), f"gradlab heatmaps — {run.path.stem}", intro), encoding="utf-8")
    return path


from .paramplots import agc_lambda, param_stats  # noqa: E402,F401  (issue #4: parameter statistics)
