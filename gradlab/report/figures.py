"""The report page's own figures: the phase-summary profile, per-layer distances, gradient
norms and noise scale, train/test curves, the seed-group profile, and the D / relative toggle
of a heatmap. Pure functions of stored data (through the public ``Run`` API); the heatmaps
themselves are ``gradlab.report.plots``.
"""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from gradlab.report import plots
from gradlab.report.summary import CONTROL, bin_label
from gradlab.runfile import names as runnames  # (`names` is a parameter below)
from gradlab.runfile.reader import Run

RUN_COLOURS = qualitative.D3
PROBE_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
CONTROL_COLOUR = "#7f7f7f"


def _e(x: object) -> str:
    return html.escape(str(x))


def probe_colour(probe: str, all_probes: list[str]) -> str:
    if probe == CONTROL:
        return CONTROL_COLOUR
    metric = [p for p in all_probes if p != CONTROL]
    return PROBE_COLOURS[metric.index(probe) % len(PROBE_COLOURS)] if probe in metric else PROBE_COLOURS[0]


def summary_profile_figure(summaries: dict[str, pd.DataFrame], bins: int, all_probes: list[str],
                           measure: str) -> go.Figure | None:
    """Mean relative D per quantile bin, one panel per phase, one line per (run, probe)."""
    frames = [df.assign(run=name) for name, df in summaries.items() if len(df)]
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    phases = sorted(df.phase.unique())
    fig = make_subplots(rows=1, cols=len(phases), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"phase {p}" for p in phases])
    dashes = ["solid", "dash", "dot", "dashdot", "longdash"]
    labels = [bin_label(b, bins) for b in range(bins)]
    multi = len(summaries) > 1
    for (run, probe), g in df.groupby(["run", "probe"], sort=False):
        ri = list(summaries).index(run)
        for j, ph in enumerate(phases):
            row = g[g.phase == ph]
            if not len(row):
                continue
            y = [row.iloc[0][f"bin_{b + 1}"] for b in range(bins)]
            name = f"{run} · {probe}" if multi else probe
            fig.add_trace(go.Scatter(
                x=labels, y=y, mode="lines+markers", name=name, legendgroup=name, showlegend=(j == 0),
                line=dict(color=RUN_COLOURS[ri % len(RUN_COLOURS)] if multi else probe_colour(probe, all_probes),
                          dash=dashes[all_probes.index(probe) % len(dashes)] if multi else "solid", width=2),
                hovertemplate=f"{_e(name)}<br>%{{x}}: relative D %{{y:.3f}}<extra>phase {ph}</extra>",
            ), row=1, col=j + 1)
    for run, g in df.groupby("run", sort=False):
        ri = list(summaries).index(run)
        name = f"{run} · {CONTROL} (control)" if multi else f"{CONTROL} (control)"
        for j, ph in enumerate(phases):
            row = g[g.phase == ph]
            if not len(row) or "control_bin_1" not in row or not np.isfinite(row.iloc[0]["control_bin_1"]):
                continue
            y = [row.iloc[0][f"control_bin_{b + 1}"] for b in range(bins)]
            fig.add_trace(go.Scatter(
                x=labels, y=y, mode="lines+markers", name=name, legendgroup=name, showlegend=(j == 0),
                line=dict(color=RUN_COLOURS[ri % len(RUN_COLOURS)] if multi else CONTROL_COLOUR, dash="dot", width=1.5),
                marker=dict(symbol="x", size=6),
                hovertemplate=f"{_e(name)}<br>%{{x}} (by batch number): relative D %{{y:.3f}}<extra>phase {ph}</extra>",
            ), row=1, col=j + 1)
    for j in range(len(phases)):
        fig.add_hline(y=1.0, line=dict(color="#bbbbbb", width=1, dash="dot"), row=1, col=j + 1)
        fig.update_xaxes(title_text=f"quantile bin of batch score ({labels[0]} = lowest)", row=1, col=j + 1)
    fig.update_yaxes(title_text=f"D ({measure}) / random control's mean; 1 = random batch", row=1, col=1)
    fig.update_layout(template="plotly_white", height=360, margin=dict(t=50, b=60, l=70, r=20),
                      title=dict(text=f"Relative distance per score quantile ({measure}); "
                                      f"lower = closer to ∇<sub>e</sub>"),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def layer_figure(run: Run, probe: str, measure: str = "l2") -> go.Figure | None:
    """log10 of the batch-mean per-layer D: layers (network order) x epochs."""
    if not run.has(runnames.layer_distance(probe, measure)) or run.epochs_done == 0:
        return None
    d = run.layer_distance_matrix(probe, measure).mean(axis=1)  # [E, L]
    lay = run.layers()
    z = np.log10(np.where(d > 0, d, np.nan)).T.astype(np.float32)  # [L, E]; float32 halves the page
    labels = [f"{i}: {n}" for i, n in enumerate(lay.layer)]
    numel = np.broadcast_to(lay.numel.to_numpy(dtype=np.float32)[:, None], z.shape)  # numeric: stays compact
    fig = go.Figure(go.Heatmap(
        z=z, x=np.arange(run.epochs_done), y=labels, colorscale=plots.COLORSCALE, customdata=numel,
        colorbar=dict(title=dict(text=f"log10 D ({measure})", side="right")),
        hovertemplate="epoch %{x}<br>%{y}<br>%{customdata:,} params<br>log10 D %{z:.3f}<extra></extra>",
    ))
    for m in run.milestones:
        if 0 < m < run.epochs_done:
            fig.add_vline(x=m - 0.5, line=dict(color="#d62728", width=1, dash="dot"))
    fig.update_layout(template="plotly_white", height=min(900, 140 + 14 * len(labels)),
                      title=dict(text=f"<b>{_e(probe)}</b> — per-layer D, mean over batches"),
                      xaxis=dict(title="epoch"), yaxis=dict(title="", autorange="reversed", tickfont=dict(size=10)),
                      margin=dict(t=50, b=50, l=10, r=10))
    return fig


def norms_figure(runs: Sequence[Run], names: list[str], all_probes: list[str]) -> go.Figure | None:
    """Full-gradient norm, mean batch-gradient norm and noise scale per epoch, per (run, probe)."""
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07,
                        subplot_titles=["‖∇<sub>e</sub>‖ (full gradient)", "mean ‖∇<sub>k</sub>‖ (batches)",
                                        "gradient noise scale"])
    multi = len(runs) > 1
    dashes = ["solid", "dash", "dot", "dashdot"]
    n = 0
    for ri, (run, name) in enumerate(zip(runs, names)):
        for probe in run.probes:
            if not run.has(runnames.full_norm(probe)) or run.epochs_done == 0:
                continue
            nm = run.norms(probe).groupby("epoch", as_index=False).agg(full=("full_norm", "first"),
                                                                      batch=("batch_norm", "mean"))
            ns = run.noise_scale(probe) if run.has(runnames.noise_scale(probe)) else None
            label = f"{name} · {probe}" if multi else probe
            line = dict(color=RUN_COLOURS[ri % len(RUN_COLOURS)] if multi else probe_colour(probe, all_probes),
                        dash=dashes[all_probes.index(probe) % len(dashes)] if multi else "solid")
            series = [(nm.epoch, nm.full), (nm.epoch, nm.batch)]
            series += [(ns.epoch, ns.noise_scale)] if ns is not None else []
            for j, (x, y) in enumerate(series):
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label, legendgroup=label,
                                         showlegend=(j == 0), line=line, marker=dict(size=5)), row=1, col=j + 1)
            n += 1
    if n == 0:
        return None
    fig.update_yaxes(type="log", row=1, col=3)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(template="plotly_white", height=340, margin=dict(t=50, b=50, l=60, r=20),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def curves_figure(runs: Sequence[Run], names: list[str]) -> go.Figure | None:
    """Train (solid) and test (dashed) loss and accuracy per epoch; one colour per run."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=["loss", "accuracy"])
    n = 0
    for ri, (run, name) in enumerate(zip(runs, names)):
        c = run.train_curves()
        if not len(c):
            continue
        colour = RUN_COLOURS[ri % len(RUN_COLOURS)]
        for j, metric in enumerate(("loss", "acc")):
            for split, dash in (("train", "solid"), ("test", "dash")):
                col = f"{split}_{metric}"
                if col in c:
                    label = f"{name} · {split}" if len(runs) > 1 else split
                    fig.add_trace(go.Scatter(x=c.epoch, y=c[col], mode="lines+markers", name=label, legendgroup=label,
                                             showlegend=(j == 0), line=dict(color=colour, dash=dash),
                                             marker=dict(size=5)), row=1, col=j + 1)
                    n += 1
    if n == 0:
        return None
    for m in runs[0].milestones:
        if 0 < m < max(r.epochs_done for r in runs):
            fig.add_vline(x=m - 0.5, line=dict(color="#bbbbbb", width=1, dash="dot"))
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(template="plotly_white", height=340, margin=dict(t=50, b=50, l=60, r=20),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def seed_figure(s: pd.DataFrame, bins: int, title: str) -> go.Figure:
    """Seed-mean D per score bin with 95% t-interval error bars, one panel per phase."""
    phases = sorted(s.phase.unique())
    fig = make_subplots(rows=1, cols=len(phases), shared_yaxes=True, subplot_titles=[f"phase {p}" for p in phases])
    labels = [bin_label(b, bins) for b in range(bins)]
    for j, ph in enumerate(phases):
        for _, r in s[s.phase == ph].iterrows():
            y = np.array([r[f"bin_{b + 1}"] for b in range(bins)])
            lo = np.array([r[f"bin_{b + 1}_ci_low"] for b in range(bins)])
            hi = np.array([r[f"bin_{b + 1}_ci_high"] for b in range(bins)])
            fig.add_trace(go.Scatter(x=labels, y=y, mode="lines+markers", name=r.probe, legendgroup=r.probe,
                                     showlegend=j == 0, error_y=dict(type="data", array=hi - y, arrayminus=y - lo)),
                          row=1, col=j + 1)
        fig.add_hline(y=1.0, line=dict(color="#bbbbbb", width=1, dash="dot"), row=1, col=j + 1)
    fig.update_yaxes(title_text="D / random control's mean (seed mean, 95% CI)", row=1, col=1)
    fig.update_layout(template="plotly_white", height=360, title=title, legend=dict(orientation="h", y=-0.2))
    return fig


def shared_range(runs: Sequence[Run], phase: int, probes: list[str], measure: str) -> dict[int, tuple[float, float]]:
    """Per run: one colour range for every probe's heatmap of ``phase``, so probes compare directly."""
    out = {}
    for i, run in enumerate(runs):
        vals = [run.distance_matrix(p, measure)[run.phase_epochs(phase)] for p in probes
                if p in run.probes and measure in run.measures(p)]
        vals = [v[np.isfinite(v)] for v in vals if v.size]
        if vals:
            allv = np.concatenate(vals)
            if allv.size:
                out[i] = (float(allv.min()), float(allv.max()))
    return out


def with_relative_toggle(fig: go.Figure, random_unit: np.ndarray | None = None) -> go.Figure:
    """Buttons switching a D heatmap between D, D / the random control's mean D of the same
    epoch (``random_unit``, one value per heatmap row; the common unit of the phase summary)
    and D / that epoch's own mean over batches.

    Per-epoch scaling removes the shrinking of D over training, so the pattern across
    batches within each epoch (the paper's question) is visible in every row.
    """
    tr = fig.data[0]
    z = np.asarray(tr.z, dtype=float)
    if z.ndim != 2 or z.size == 0:
        return fig
    custom = None if tr.customdata is None else np.asarray(tr.customdata, dtype=np.float32)
    tr.update(z=z.astype(np.float32), customdata=custom)  # float32 halves the page size
    views = [("D / epoch mean", z / z.mean(axis=1, keepdims=True))]
    if random_unit is not None and len(random_unit) == len(z):
        views.insert(0, ("D / random mean", z / np.asarray(random_unit, dtype=float)[:, None]))
    for label, rel in views:
        fig.add_trace(go.Heatmap(z=rel.astype(np.float32), x=tr.x, y=tr.y, customdata=custom,
                                 colorscale=tr.colorscale, visible=False,
                                 colorbar=dict(title=dict(text=label, side="right")),
                                 hovertemplate=tr.hovertemplate.replace("D %{z:.4g}", f"{label} %{{z:.3f}}")))
    n = len(views) + 1
    buttons = [dict(label=label, method="restyle", args=[{"visible": [i == j for j in range(n)]}])
               for i, label in enumerate(["D"] + [v[0] for v in views])]
    fig.update_layout(updatemenus=[dict(
        type="buttons", direction="right", x=1, xanchor="right", y=1, yanchor="bottom",
        pad=dict(b=4), showactive=True, font=dict(size=11), bgcolor="#eef3f8", buttons=buttons)])
    return fig
