"""``gradlab report``: one self-contained, offline HTML page for one or several runs.

Sections: runs at a glance, the phase summary (which quantile of batches is closest to
the full gradient, per phase, against chance), across seeds (intervals and seed-mean
heatmaps, when seeds of one study are given together), distance heatmaps per probe and phase,
per-layer distances, gradient norms and noise scale, train/test curves, parameter
statistics (runs with ``/params``), and provenance. Several runs are compared side by
side: heatmaps in columns, line plots overlaid with one colour per run.

plotly.js is inlined once in ``<head>``; the page fetches nothing. ``png_dir`` also
writes every figure as a static PNG through kaleido, which drives a local Chromium.
"""
from __future__ import annotations

import datetime
import html
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from gradlab import __version__
from gradlab.report import plots
from gradlab.report.compare import has_references, reference_comparison
from gradlab.runfile import names as runnames  # (`names` is a parameter below)
from gradlab.runfile.reader import Run, open_run
from gradlab.config import flatten
from gradlab.errors import GradlabError
from gradlab.report.units import has_control, random_unit
from gradlab.report.summary import CONTROL, bin_label, phase_summary, pooled_noise_scale

RUN_COLOURS = qualitative.D3
PROBE_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
CONTROL_COLOUR = "#7f7f7f"
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class BrowserMissingError(GradlabError):
    """PNG export needs a Chromium-family browser and none was found."""


@dataclass
class Report:
    """What ``write_report`` produced."""

    html: Path
    figures: int
    pngs: list[Path] = field(default_factory=list)


@dataclass
class _Fig:
    fig: go.Figure
    slug: str


# ---------------------------------------------------------------------------- helpers
def run_names(runs: Sequence[Run]) -> list[str]:
    """Short unique names: the file stem, or parent/stem when stems repeat."""
    stems = [r.path.stem for r in runs]
    names = [s if stems.count(s) == 1 else f"{r.path.parent.name}/{s}" for s, r in zip(stems, runs)]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]


def _slug(*parts: object) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(p) for p in parts)).strip("-")


def _probe_colour(probe: str, all_probes: list[str]) -> str:
    if probe == CONTROL:
        return CONTROL_COLOUR
    metric = [p for p in all_probes if p != CONTROL]
    return PROBE_COLOURS[metric.index(probe) % len(PROBE_COLOURS)] if probe in metric else PROBE_COLOURS[0]


def _e(x: object) -> str:
    return html.escape(str(x))


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.{digits}e}"
    return str(v)


def _cell_colour(v: float, lo: float, hi: float) -> tuple[str, str]:
    """Background and text colour for a relative-D value: light = close (as the heatmaps)."""
    if not np.isfinite(v):
        return "#ffffff", "#000000"
    t = 0.5 if hi <= lo else float(np.clip((v - lo) / (hi - lo), 0, 1))
    bg = sample_colorscale(plots.COLORSCALE, [0.05 + 0.8 * t])[0]
    return bg, ("#ffffff" if t > 0.55 else "#08306b")


def _all_probes(runs: Sequence[Run]) -> list[str]:
    seen: list[str] = []
    for r in runs:
        seen += [p for p in r.probes if p not in seen]
    return sorted(seen, key=lambda p: (p == CONTROL, p))


# ---------------------------------------------------------------------------- figures
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
                line=dict(color=RUN_COLOURS[ri % len(RUN_COLOURS)] if multi else _probe_colour(probe, all_probes),
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
                      title=dict(text=f"Relative distance per score quantile ({measure}); lower = closer to ∇<sub>e</sub>"),
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
            line = dict(color=RUN_COLOURS[ri % len(RUN_COLOURS)] if multi else _probe_colour(probe, all_probes),
                        dash=dashes[all_probes.index(probe) % len(dashes)] if multi else "solid")
            series = [(nm.epoch, nm.full), (nm.epoch, nm.batch)] + ([(ns.epoch, ns.noise_scale)] if ns is not None else [])
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


def _shared_range(runs: Sequence[Run], phase: int, probes: list[str], measure: str) -> dict[int, tuple[float, float]]:
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


# ---------------------------------------------------------------------------- HTML pieces
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2733;background:#f6f8fa}
main{max-width:1320px;margin:0 auto;padding:1.5em 2em 4em}
h1{margin:.2em 0 .1em;font-size:1.7em} h2{margin-top:2.2em;border-bottom:2px solid #dbe4ee;padding-bottom:.2em}
h3{margin:1.4em 0 .4em;font-size:1.1em}
p.lead{color:#4a5a6a;margin-top:0} .note{color:#4a5a6a;font-size:.93em;max-width:62em}
nav.toc{background:#fff;border:1px solid #dbe4ee;border-radius:8px;padding:.6em 1.2em;margin:1em 0;display:inline-block}
nav.toc ol{margin:.3em 0;padding-left:1.3em} nav.toc a{color:#1f5f99;text-decoration:none}
.card{background:#fff;border:1px solid #dbe4ee;border-radius:8px;padding:.6em .8em;margin:.8em 0}
.grid{display:grid;gap:.8em;grid-template-columns:repeat(var(--cols),minmax(0,1fr))}
.grid>.card{margin:0;min-width:0} .runname{font-weight:600;font-size:.95em;margin:.1em 0 .3em}
table{border-collapse:collapse;background:#fff;font-size:.88em}
th,td{border:1px solid #dbe4ee;padding:.3em .55em;text-align:left;vertical-align:top}
th{background:#eef3f8;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap} td.run{white-space:nowrap}
td.bin{text-align:center;font-variant-numeric:tabular-nums;min-width:3.4em} td.best{outline:2px solid #e6550d;outline-offset:-2px;font-weight:700}
tr.diff td{background:#fff8e6} .swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.35em;vertical-align:-1px}
.yes{color:#1a7f37;font-weight:600} .no{color:#6e7781} .tablewrap{overflow-x:auto}
code{background:#eef3f8;padding:0 .25em;border-radius:3px}
details>summary{cursor:pointer;color:#1f5f99;margin:.6em 0}
"""


def _tidy(fig: go.Figure, narrow: bool) -> go.Figure:
    """Title below the mode bar (it sits top right), smaller in side-by-side columns."""
    top = (fig.layout.margin.t or 60) if fig.layout.margin else 60
    fig.update_layout(title=dict(yref="container", y=1, yanchor="top", pad=dict(t=30),
                                 font=dict(size=13 if narrow else 16)),
                      margin=dict(t=max(top, 78)), height=(fig.layout.height or 400) + max(0, 78 - top))
    return fig


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


def _fig_html(f: _Fig) -> str:
    return pio.to_html(f.fig, full_html=False, include_plotlyjs=False, config=PLOT_CONFIG,
                       div_id=f"fig-{f.slug}", default_height=f"{f.fig.layout.height or 400}px")


def _summary_table(summaries: dict[str, pd.DataFrame], runs_colour: dict[str, str], bins: int,
                   measure: str) -> str:
    frames = [df.assign(run=name) for name, df in summaries.items() if len(df)]
    if not frames:
        return "<p class='note'>No committed epochs with distances yet.</p>"
    df = pd.concat(frames, ignore_index=True)
    bcols = [f"bin_{b + 1}" for b in range(bins)]
    vals = df[bcols].to_numpy(dtype=float)
    lo, hi = np.nanmin(vals), np.nanmax(vals)
    multi = len(summaries) > 1
    head = ["probe", "phase"] + (["run"] if multi else []) + [bin_label(b, bins) for b in range(bins)] + [
        "closest quantile (scores)", "gain (unit)", "extremes / middle", "chance best", "p",
        f"<span class='swatch' style='background:{CONTROL_COLOUR}'></span>{CONTROL} control: best / spread",
        "gain ÷ control spread", "verdict"]
    out = ["<div class='tablewrap'><table class='summary'><thead><tr>",
           "".join(f"<th>{h}</th>" for h in head), "</tr></thead><tbody>"]
    df = df.sort_values(["probe", "phase"], kind="stable")
    for _, r in df.iterrows():
        cells = [f"<td><b>{_e(r.probe)}</b><br><span class='note'>{_e(r.score_label)}</span></td>",
                 f"<td>{int(r.phase)}<br><span class='note'>epochs {_e(r.epochs)}, lr {r.lr:g}</span></td>"]
        if multi:
            cells.append(f"<td class='run'><span class='swatch' style='background:{runs_colour[r.run]}'></span>{_e(r.run)}</td>")
        for b in range(bins):
            v = float(r[f"bin_{b + 1}"])
            bg, fg = _cell_colour(v, lo, hi)
            cls = "bin best" if b + 1 == int(r.best_bin) else "bin"
            cells.append(f"<td class='{cls}' style='background:{bg};color:{fg}'>{v:.3f}</td>")
        s_lo, s_hi = r.best_scores
        cells.append(f"<td><b>{_e(r.best_label)}</b><br><span class='note'>scores {_fmt(s_lo)}–{_fmt(s_hi)}</span></td>")
        unit = "vs random" if getattr(r, "unit", "random") == "random" else "vs own epoch mean (no control)"
        cells.append(f"<td class='num'>{-100 * r.gain:+.1f}%<br><span class='note'>{unit}</span></td>")
        cells.append(f"<td class='num'>{r.outer_rel:.3f} / {r.middle_rel:.3f}</td>")
        cells.append(f"<td class='num'>{r.chance_best_rel:.3f}</td>")
        cells.append(f"<td class='num'>{r.p_value:.3f}</td>" if np.isfinite(r.p_value) else "<td>–</td>")
        ctrl = ("–" if not np.isfinite(r.control_best_rel)
                else f"{r.control_best_rel:.3f} / {r.control_spread:.3f}")
        cells.append(f"<td class='num'>{ctrl}</td>")
        ratio = r.gain / r.control_spread if np.isfinite(r.control_spread) and r.control_spread > 0 else np.nan
        cells.append(f"<td class='num'>{ratio:.2f}</td>" if np.isfinite(ratio) else "<td>–</td>")
        cls = "yes" if r.verdict == "beats chance" else "no"
        cells.append(f"<td class='{cls}'>{_e(r.verdict)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _runs_table(runs: Sequence[Run], names: list[str], colours: dict[str, str], keys: list[tuple[str, Any]]) -> str:
    head = "<th></th>" + "".join(f"<th><span class='swatch' style='background:{colours[n]}'></span>{_e(n)}</th>"
                                 for n in names)
    rows = []
    for label, get in keys:
        vals = [get(r) for r in runs]
        strs = ["–" if v is None or v == "" else str(v) for v in vals]
        diff = len(runs) > 1 and len(set(strs)) > 1
        rows.append(f"<tr class='{'diff' if diff else ''}'><th>{_e(label)}</th>"
                    + "".join(f"<td>{_e(s)}</td>" for s in strs) + "</tr>")
    return f"<div class='tablewrap'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"


def _glance_keys() -> list[tuple[str, Any]]:
    c = lambda *ks: (lambda r: _dig(r.config, ks))  # noqa: E731
    return [
        ("file", lambda r: str(r.path)),
        ("status", lambda r: r.status + (f" ({r.failure})" if r.failure else "")),
        ("epochs done / planned", lambda r: f"{r.epochs_done} / {_dig(r.config, ('train', 'epochs'))}"),
        ("model", lambda r: f"{_dig(r.config, ('model', 'name'))} (norm {_dig(r.config, ('model', 'norm'))})"),
        ("parameters", lambda r: f"{int(r.layers().numel.sum()):,} in {len(r.layers())} tensors"),
        ("dataset", lambda r: f"{_dig(r.config, ('data', 'dataset'))}, subset {_dig(r.config, ('data', 'subset'))}"),
        ("batch size", c("train", "batch_size")),
        ("lr / milestones / gamma", lambda r: f"{_dig(r.config, ('train', 'lr'))} / "
                                              f"{_dig(r.config, ('train', 'milestones'))} / {_dig(r.config, ('train', 'gamma'))}"),
        ("training order", c("track", "order")),
        ("probes", lambda r: ", ".join(r.probes)),
        ("final test accuracy", lambda r: (f"{r.train_curves().test_acc.iloc[-1]:.4f}"
                                           if r.epochs_done and r.has(runnames.TEST_ACC) else None)),
    ]


def _dig(d: dict[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


# ---------------------------------------------------------------------------- PNG export
def find_chromium() -> str | None:
    """Path of a Chromium-family browser: ``BROWSER_PATH`` if set (and executable), else on PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        p = shutil.which(name)
        if p:
            return p
    return None


def export_pngs(figs: list[_Fig], out_dir: Path) -> list[Path]:
    """Write every figure as ``<out_dir>/<NN>_<slug>.png`` with kaleido (one browser for all)."""
    browser = find_chromium()
    if browser is None:
        raise BrowserMissingError(
            "PNG export needs Chromium and none was found (set BROWSER_PATH or install it: apt-get install chromium)")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{i:02d}_{f.slug}.png" for i, f in enumerate(figs)]
    old = os.environ.get("BROWSER_PATH")
    os.environ["BROWSER_PATH"] = browser  # kaleido/choreographer use this browser, never a download
    try:
        pio.write_images([f.fig for f in figs], paths, format="png",
                         width=[1200 if f.fig.layout.width is None else f.fig.layout.width for f in figs],
                         height=[f.fig.layout.height or 450 for f in figs], scale=1.5)
    except Exception as exc:  # kaleido raises several types (browser start, timeouts)
        raise BrowserMissingError(f"PNG export with kaleido and {browser} failed: {type(exc).__name__}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    finally:
        if old is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = old
    return paths


# ---------------------------------------------------------------------------- the page
class _Page:
    """What every section needs: the runs, their names and colours, and the figures so far."""

    def __init__(self, runs: Sequence[Run], measure: str, bins: int, n_perm: int):
        self.runs, self.bins, self.n_perm = list(runs), bins, n_perm
        self.names = run_names(runs)
        self.colours = {n: RUN_COLOURS[i % len(RUN_COLOURS)] for i, n in enumerate(self.names)}
        self.probes = _all_probes(runs)
        self.multi = len(runs) > 1
        self.figs: list[_Fig] = []
        ms = [m for m in ("l2", "cosine") if any(m in r.measures(p) for r in runs for p in r.probes)]
        ms += sorted({m for r in runs for p in r.probes for m in r.measures(p)} - set(ms))
        self.measures = ms
        if ms and measure not in ms:
            raise GradlabError(f'measure "{measure}" is not stored in {"these runs" if len(runs) > 1 else "this run"}; '
                               f"choose --measure {' or '.join(ms)}")
        self.measure = measure

    def add(self, fig: go.Figure | None, *slug: object) -> str:
        """A full-width figure card ("" when there is no figure)."""
        if fig is None:
            return ""
        f = _Fig(_tidy(fig, narrow=False), _slug(*slug))
        self.figs.append(f)
        return f"<div class='card'>{_fig_html(f)}</div>"

    def fig_inner(self, fig: go.Figure | None, *slug: object) -> str:
        """A figure for a grid cell (narrow when runs are side by side)."""
        if fig is None:
            return "<p class='note'>nothing stored</p>"
        f = _Fig(_tidy(fig, narrow=self.multi), _slug(*slug))
        self.figs.append(f)
        return _fig_html(f)

    def grid(self, items: list[tuple[str, str]]) -> str:
        """Cards side by side, one column per run; items are (run name, inner html)."""
        if not self.multi:
            return f"<div class='card'>{items[0][1]}</div>"
        cells = "".join(f"<div class='card'><div class='runname'><span class='swatch' style='background:"
                        f"{self.colours[n]}'></span>{_e(n)}</div>{inner}</div>" for n, inner in items)
        return f"<div class='grid' style='--cols:{len(items)}'>{cells}</div>"


Section = tuple[str, str, str]  # (anchor, title, html)


def _glance_section(pg: _Page) -> Section:
    return ("runs", "Runs at a glance", "<p class='note'>One column per run. Rows where runs differ are "
            "highlighted.</p>" + _runs_table(pg.runs, pg.names, pg.colours, _glance_keys()))


def _summary_intro(bins: int, n_perm: int) -> str:
    qname = {4: "quartiles", 10: "deciles", 5: "quintiles"}.get(bins, f"{bins} quantile bins")
    return (
        f"<p class='note'>The paper's question, per training phase (a span of constant learning rate): "
        f"<b>which quantile of batches, by metric score, is closest to the full gradient ∇<sub>e</sub>?</b> "
        f"<b>Unit:</b> each epoch's distances are divided by the <code>{CONTROL}</code> control's mean D at the same "
        f"epoch (same θ<sub>e</sub>, same ∇<sub>e</sub>), so every probe is in one common unit and late epochs, whose D "
        f"is smaller, weigh the same; then averaged over the phase and grouped into score {qname} "
        f"({bin_label(0, bins)} = lowest scores). Cells show each bin's mean D in that unit: <b>1.00 is a typical "
        f"random batch, below 1 is closer</b>, lighter is closer; the closest bin is outlined. A run without the "
        f"control falls back to each probe's own epoch mean (the table says so in its unit column). "
        f"<i>gain</i> is 1 − the best bin's value. <i>extremes / middle</i> compares the two outer bins with the rest. "
        f"<i>chance best</i> is the best-bin value expected when batches are put into bins at random "
        f"(permutation test, {n_perm} shuffles; <i>p</i> is the share of shuffles whose best bin is as close). "
        f"The <code>{CONTROL}</code> probe, binned the same way by batch number, shows what no signal looks like: "
        f"its best bin and the spread between its bins; <i>gain ÷ control spread</i> above 1 means the metric's best bin "
        f"is further below 1 than the random control's bins spread. A metric beats chance when "
        f"p &lt; 0.05; with many probes and phases about one row in twenty does so by luck alone, so look for "
        f"effects that repeat across phases, measures or runs.</p>")


def _summary_section(pg: _Page) -> Section:
    summaries = {m: {n: phase_summary(r, measure=m, bins=pg.bins, n_perm=pg.n_perm) for n, r in zip(pg.names, pg.runs)}
                 for m in pg.measures}
    main = pg.measure
    prof = summary_profile_figure(summaries.get(main, {}), pg.bins, pg.probes, main)
    body = (_summary_intro(pg.bins, pg.n_perm) + f"<h3>Distance measure: {_e(main)}</h3>"
            + _summary_table(summaries.get(main, {}), pg.colours, pg.bins, main) + pg.add(prof, "summary_profile", main))
    for m in pg.measures:
        if m != main:
            body += (f"<details><summary>Same table for the {_e(m)} distance</summary>"
                     + _summary_table(summaries[m], pg.colours, pg.bins, m) + "</details>")
    return ("summary", "Phase summary: which batches are closest?", body)


def _heatmap_cell(pg: _Page, i: int, run: Run, name: str, probe: str, ph: int,
                  ranges: dict[int, tuple[float, float]]) -> str:
    """One run's heatmap of ``probe`` in phase ``ph``, or a note saying why there is none."""
    if probe not in run.probes or ph >= run.num_phases:
        return f"<p class='note'>no {_e(probe)} probe or phase {ph} in this run</p>"
    if pg.measure not in run.measures(probe):
        return (f"<p class='note'>no {_e(pg.measure)} distances in this run (it stores "
                f"{_e(', '.join(run.measures(probe)) or 'none')}; choose with --measure)</p>")
    fig = plots.heatmap(run, probe, ph, pg.measure)
    if i in ranges:
        fig.update_traces(zmin=ranges[i][0], zmax=ranges[i][1])
    if pg.multi:
        fig.update_xaxes(title_text=f"batch, by {run.score_label(probe)}", title_font_size=11)
    unit = random_unit(run, pg.measure)[run.phase_epochs(ph)] if has_control(run, pg.measure) else None
    with_relative_toggle(fig, unit)
    return pg.fig_inner(fig, "heatmap", name, probe, f"phase{ph}")


def _heatmaps_section(pg: _Page) -> Section:
    body = (f"<p class='note'>D[e, k] = ‖∇<sub>k</sub> − ∇<sub>e</sub>‖ ({_e(pg.measure)}) for every epoch e "
            "(rows) and batch k (columns, in probe order, labelled by score), at the epoch-start parameters θ<sub>e</sub>. "
            "Light = close to the full gradient, dark = far, as in the paper. Within one run and phase, all probes "
            "share one colour range, so the metric and the random control compare directly. D shrinks as training "
            "converges, so early epochs dominate the colours: the <i>D / epoch mean</i> button above each heatmap "
            "divides every row by its mean over batches and shows the pattern across batches within each epoch "
            "(the quantity the phase summary averages)."
            + (" Runs are side by side, one column each." if pg.multi else "") + "</p>")
    nph = max((r.num_phases for r in pg.runs), default=0)
    for ph in range(nph):
        ranges = _shared_range(pg.runs, ph, pg.probes, pg.measure)
        for probe in pg.probes:
            items = [(name, _heatmap_cell(pg, i, run, name, probe, ph, ranges))
                     for i, (run, name) in enumerate(zip(pg.runs, pg.names))]
            body += f"<h3>Phase {ph} — {_e(probe)}</h3>" + pg.grid(items)
    if nph == 0:
        body += "<p class='note'>No committed epochs yet.</p>"
    return ("heatmaps", "Distance heatmaps", body)


def _layers_section(pg: _Page) -> Section:
    body = ("<p class='note'>Per-layer distance ‖∇<sub>k,l</sub> − ∇<sub>e,l</sub>‖ for every parameter tensor l "
            "(network order, top to bottom), averaged over the batches of each epoch, on a log scale. "
            "It shows which layers carry the batch-to-batch disagreement and how that moves across phases "
            "(dotted lines: learning-rate milestones).</p>")
    any_layer = False
    for probe in pg.probes:
        items = []
        for run, name in zip(pg.runs, pg.names):
            fig = layer_figure(run, probe) if probe in run.probes else None
            any_layer |= fig is not None
            items.append((name, pg.fig_inner(fig, "layers", name, probe)))
        body += f"<h3>{_e(probe)}</h3>" + pg.grid(items)
    if not any_layer:
        body += "<p class='note'>No per-layer distances stored (track.per_layer = false).</p>"
    return ("layers", "Per-layer distances", body)


def _norms_section(pg: _Page) -> Section:
    body = ("<p class='note'>Norm of the full gradient ∇<sub>e</sub>, mean norm of the batch gradients, and the "
            "gradient noise scale (how large a batch must be before its gradient resembles ∇<sub>e</sub>), per epoch."
            + (" Colour = run, dash = probe." if pg.multi else "") + "</p>")
    body += pg.add(norms_figure(pg.runs, pg.names, pg.probes), "norms") or "<p class='note'>nothing stored</p>"
    return ("norms", "Gradient norms and noise scale", body + _noise_table(pg))


def _noise_table(pg: _Page) -> str:
    """Per run, probe and phase: the pooled noise scale and how many epochs' own ratio is undefined."""
    rows = []
    for run, name in zip(pg.runs, pg.names):
        if not run.probes or run.epochs_done == 0:
            continue
        for r in pooled_noise_scale(run.noise_scale()).itertuples():
            rows.append(f"<tr><td>{_e(name)}</td><td>{_e(r.probe)}</td><td>{r.phase}</td><td>{r.epochs}</td>"
                        f"<td>{r.undefined}</td><td>{_fmt(r.median_epoch)}</td><td><b>{_fmt(r.pooled)}</b></td></tr>")
    if not rows:
        return ""
    return ("<p class='note'>The per-epoch noise scale B = tr(Σ) / ‖G‖² divides two unbiased estimates; the ‖G‖² "
            "estimate can be ≤ 0 on small runs, and B is then undefined (missing from the plot, counted here). "
            "<i>pooled</i> averages both estimates over the phase before dividing (McCandlish et al. 2018), the "
            "figure to quote; it is most meaningful for the <code>random</code> probe.</p>"
            "<table class='summary'><tr><th>run</th><th>probe</th><th>phase</th><th>epochs</th>"
            "<th>B undefined</th><th>median B (defined epochs)</th><th>pooled B</th></tr>" + "".join(rows) + "</table>")


def _curves_section(pg: _Page) -> Section:
    body = ("<p class='note'>Training loss and accuracy (averaged during each epoch, with augmentation) and test "
            "loss and accuracy (after each epoch). Solid = train, dashed = test; dotted lines = milestones"
            + (" of the first run." if pg.multi else ".") + (" Colour = run." if pg.multi else "") + "</p>")
    body += pg.add(curves_figure(pg.runs, pg.names), "curves") or "<p class='note'>No committed epochs yet.</p>"
    return ("curves", "Train and test curves", body)


def _provenance_section(pg: _Page) -> Section:
    keys: list[tuple[str, Any]] = [("schema", lambda r: r.schema or ""),
                                   ("migrated from", lambda r: r.migrated_from)]
    pkeys = sorted({k for r in pg.runs for k in r.provenance})
    keys += [(k, (lambda k: lambda r: r.provenance.get(k))(k)) for k in pkeys]
    flat = {id(r): flatten(r.config) for r in pg.runs}
    ckeys = sorted({k for f in flat.values() for k in f})
    keys += [(f"config {k}", (lambda k: lambda r: flat[id(r)].get(k))(k)) for k in ckeys]
    return ("provenance", "Provenance and full configuration",
            "<p class='note'>Where, when and with what each run was made, and its complete configuration "
            "(rows where runs differ are highlighted).</p>" + _runs_table(pg.runs, pg.names, pg.colours, keys))


def seed_groups(runs: Sequence[Run]) -> list[list[int]]:
    """Indices of runs that are seeds of one study (configs equal but for the seed and the
    output path), for groups of two or more."""
    def key(r: Run) -> str:
        flat = {k: v for k, v in flatten(r.config).items() if k not in ("train.seed", "train.seeds", "output.path")}
        return repr(sorted(flat.items()))
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(key(r), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


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


def _seeds_section(pg: _Page) -> Section | None:
    groups = seed_groups(pg.runs)
    body = ("<p class='note'>Runs that differ only in <code>train.seed</code> are summarised together: each score "
            "bin's mean D across seeds, in the random control's unit, with a 95% Student-t interval over seeds "
            "(n − 1 degrees of freedom), the control's interval in the same bin, and one p-value from a permutation "
            "test pooled over seeds (batches shuffled between bins within every seed independently).</p>")
    if not groups:
        return None  # the section appears only when seeds of one study are given together
    for g in groups:
        runs = [pg.runs[i] for i in g]
        s = phase_summary(runs, measure=pg.measure, bins=pg.bins, n_perm=pg.n_perm)
        title = f"{len(runs)} seeds: " + ", ".join(pg.names[i] for i in g)
        rows = "".join(
            f"<tr><td>{_e(r.probe)}</td><td>{r.phase}</td><td>{_e(r.best_label)}</td>"
            f"<td class='num'>{r.best_rel:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]</td>"
            f"<td class='num'>{r.get('control_rel', np.nan):.3f} [{r.get('control_ci_low', np.nan):.3f}, "
            f"{r.get('control_ci_high', np.nan):.3f}]</td><td class='num'>{r.p_value:.3f}</td>"
            f"<td>{_e(r.verdict)}</td></tr>" for _, r in s.iterrows())
        body += (f"<h3>{_e(title)}</h3><table class='summary'><tr><th>probe</th><th>phase</th><th>closest bin</th>"
                 f"<th>D (95% CI)</th><th>{CONTROL} control, same bin</th><th>p (pooled)</th><th>verdict</th></tr>"
                 f"{rows}</table>" + pg.add(seed_figure(s, pg.bins, title), "seeds", *g) + _seed_heatmaps(pg, g))
    return ("seeds", "Across seeds", body)


def _seed_heatmaps(pg: _Page, g: list[int]) -> str:
    """``plots.seed_mean_heatmap`` of one seed group per phase and probe; the probes of a phase
    share one colour range, since the unit is common and the probes then compare directly."""
    runs = [pg.runs[i] for i in g]
    probes = [p for p in pg.probes if all(p in r.probes and pg.measure in r.measures(p) for r in runs)]
    body = ("<p class='note'><b>Seed-mean heatmaps.</b> Each cell is D[e, k] divided by that seed's "
            f"<code>{CONTROL}</code> control mean D at epoch e (its own epoch mean when a seed lacks the control; "
            "the title says so), then averaged over the seeds (epochs committed in every seed); light = close, "
            "1 = a typical random batch. The probes of a phase share one colour range; "
            "hover shows the seeds' min–max of the cell.</p>")
    for ph in range(min(r.num_phases for r in runs)):
        figs = [plots.seed_mean_heatmap(runs, p, ph, pg.measure) for p in probes]
        z = np.concatenate([np.asarray(f.data[0].z, dtype=float).ravel() for f in figs] or [np.zeros(0)])
        z = z[np.isfinite(z)]
        for probe, fig in zip(probes, figs):
            if z.size:
                fig.update_traces(zmin=float(z.min()), zmax=float(z.max()))
            body += pg.add(fig, "seed_mean_heatmap", *g, probe, f"phase{ph}")
    return body


def _ci(v: float, lo: float, hi: float) -> str:
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "")


def _reference_table(t: pd.DataFrame) -> str:
    rows = "".join(
        f"<tr><td>{_e(r.probe)}</td><td>{_e(r.kind)}</td><td>{_e(r.batching)}</td>"
        f"<td class='num'>{_ci(r.mean_rel, r.mean_ci_low, r.mean_ci_high)}</td>"
        f"<td class='num'>{_ci(r.best_rel, r.best_ci_low, r.best_ci_high)}</td>"
        f"<td class='num'>{_fmt(r.frac_mean, 2)}</td><td class='num'>{_fmt(r.frac_best, 2)}</td></tr>"
        for r in t.itertuples())
    ref = t.iloc[0]
    return (f"<table class='summary'><tr><th>probe</th><th>kind</th><th>cut</th><th>mean D</th><th>best bin D</th>"
            f"<th>gain ÷ {_e(ref.ref_mean or 'reference')}'s (mean)</th><th>gain ÷ {_e(ref.ref_best or 'reference')}'s "
            f"(best bin)</th></tr>{rows}</table>")


def _reference_groups(pg: _Page) -> list[list[int]]:
    """Seeds of one study together, every other run alone; only runs with reference orders and the control."""
    ok = [i for i, r in enumerate(pg.runs) if has_references(r) and has_control(r, pg.measure)]
    groups = [[i for i in g if i in ok] for g in seed_groups(pg.runs)]
    grouped = {i for g in groups for i in g}
    return [g for g in groups if g] + [[i] for i in ok if i not in grouped]


def _references_section(pg: _Page) -> Section | None:
    groups = _reference_groups(pg)
    if not groups:
        return None  # only for runs that probed gradient-informed orders or stratified cuts
    body = ("<p class='note'>Every order and cut in one unit, the <code>random</code> control's mean D at the same "
            "epoch (1 = a typical random batch, below 1 = closer to ∇<sub>e</sub>). <i>mean D</i>: over the phase and "
            "all batches; <i>best bin D</i>: the closest score quartile. Gradient-informed orders (<code>loss</code>, "
            "<code>gradnorm</code>, <code>align</code>, <code>proj</code>, <code>match</code>) are rebuilt from "
            "per-sample gradients at every θ<sub>e</sub> and mark how close a batch can get; each probe's gain "
            "(1 − D) is given as a fraction of the phase's best reference's gain. <code>@strat</code>: the stratified "
            "cut (batch k takes sorted positions k, k + K, ...). Intervals: 95% Student-t over seeds.</p>")
    for g in groups:
        runs = [pg.runs[i] for i in g]
        t = reference_comparison(runs, measure=pg.measure, bins=pg.bins)
        title = (f"{len(runs)} seeds: " if len(runs) > 1 else "") + ", ".join(pg.names[i] for i in g)
        body += f"<h3>{_e(title)}</h3>"
        for ph in sorted(t.phase.unique()):
            body += (f"<h4>Phase {ph}</h4>" + _reference_table(t[t.phase == ph])
                     + pg.add(plots.reference_figure(t, ph), "references", ph, *g))
    return ("references", "Reference orders: between random and gradient-informed batches", body)


SECTIONS = (_glance_section, _summary_section, _references_section, _seeds_section, _heatmaps_section,
            _layers_section, _norms_section,
            _curves_section, lambda pg: ("params", "Parameter statistics", _params_section(pg.runs, pg.names, pg.add)),
            _provenance_section)


def _html_page(title: str, n_runs: int, sections: list[Section]) -> str:
    from plotly.offline import get_plotlyjs

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = "".join(f"<li><a href='#{a}'>{_e(t)}</a></li>" for a, t, _ in sections)
    content = "".join(f"<section id='{a}'><h2>{_e(t)}</h2>{b}</section>" for a, t, b in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body><main>"
            f"<h1>{_e(title)}</h1><p class='lead'>{n_runs} run(s) · generated {when} by gradlab {__version__}</p>"
            f"<nav class='toc'><b>Contents</b><ol>{toc}</ol></nav>{content}</main></body></html>")


def build_report(runs: Sequence[Run], measure: str = "l2", bins: int = 4, n_perm: int = 2000,
                 title: str | None = None) -> tuple[str, list[_Fig]]:
    """The report page as HTML text, plus its figures (for PNG export): one function per section."""
    if not runs:
        raise GradlabError("gradlab report needs at least one run file")
    pg = _Page(runs, measure, bins, n_perm)
    sections = [s for s in (make(pg) for make in SECTIONS) if s is not None]
    return _html_page(title or ("gradlab report — " + ", ".join(pg.names)), len(runs), sections), pg.figs


def _params_section(runs: Sequence[Run], names: list[str], add: Any) -> str:
    """``plots.param_stats`` for every stat and ``plots.agc_lambda`` per AGC run, for runs with ``/params``."""
    with_params = [r for r in runs if r.has_param_stats]
    note = ("<p class='note'>Per-layer parameter mean and variance, and gradient norm, as recorded during training "
            "(<code>track.param_stats</code>), one line per run, faceted by parameter kind.</p>")
    if not with_params:
        return note + "<p class='note'>No run here recorded parameter statistics (no <code>/params</code> group).</p>"
    body = note
    for stat in Run.PARAM_STATS:
        body += add(plots.param_stats(with_params, stat=stat, names=[n for r, n in zip(runs, names)
                                                                      if r.has_param_stats]), "params", stat)
    for run, name in zip(runs, names):
        if run.has_param_stats and (run.layers().kind == "agc.lambda").any():
            body += add(plots.agc_lambda(run), "agc_lambda", name)
    return body


def write_report(paths: Sequence[str | Path], out: str | Path, png_dir: str | Path | None = None,
                 measure: str = "l2", bins: int = 4, n_perm: int = 2000, title: str | None = None) -> Report:
    """Write the HTML report for the run files ``paths``; with ``png_dir`` also PNGs of every figure.

    The HTML is written first; a missing browser for PNGs raises ``BrowserMissingError``
    after it (with the HTML path in the message), so nothing already produced is lost.
    """
    out = Path(out)
    runs = [open_run(p) for p in paths]
    try:
        page, figs = build_report(runs, measure=measure, bins=bins, n_perm=n_perm, title=title)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
        report = Report(out, len(figs))
        if png_dir is not None:
            try:
                report.pngs = export_pngs(figs, Path(png_dir))
            except BrowserMissingError as exc:
                raise BrowserMissingError(f"{exc}; the HTML report was written to {out}") from exc
        return report
    finally:
        for r in runs:
            r.close()
