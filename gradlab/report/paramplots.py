"""Parameter-statistics plots (weight-mechanism paper Fig. 5 / Fig. 7, AGC λ across training).

Pure functions of stored data (``Run.param_stats()``); re-exported as ``gradlab.report.plots.param_stats``
and ``gradlab.report.plots.agc_lambda``. Runs are told apart by colour *and* dash (solid, dash-dot,
dash, dot: the paper's convention for baseline, α=0.1, α=0.5, β=0.1) and named in the legend.
"""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from gradlab.runfile.reader import Run
from gradlab.errors import GradlabError

DASHES = ("solid", "dashdot", "dash", "dot", "longdash", "longdashdot")
COLORS = qualitative.D3
STAT_TITLES = {"mean": "mean", "var": "variance", "grad_norm": "gradient L2 norm"}
KIND_ORDER = ("conv.weight", "linear.weight", "bn.weight", "gn.weight", "ln.weight", "agc.gamma", "agc.lambda",
              "bn.bias", "agc.beta", "bias")


def _runs(runs: Run | Sequence[Run]) -> list[Run]:
    return [runs] if isinstance(runs, Run) else list(runs)


def _names(runs: list[Run], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(runs):
            raise ValueError(f"names has {len(names)} entries for {len(runs)} runs")
        return list(names)
    return [r.path.stem for r in runs]


def _sorted_kinds(kinds: list[str]) -> list[str]:
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    return sorted(dict.fromkeys(kinds), key=lambda k: (rank.get(k, len(rank)), k))


def kind_aggregate(df: pd.DataFrame, numel: pd.Series) -> pd.DataFrame:
    """Per (step, kind) aggregate of a one-stat frame: mean -> element-weighted mean (the mean
    of all parameters of that kind), var -> element-weighted mean of per-tensor variances,
    grad_norm -> root of the sum of squares (the norm of that kind's gradient slice)."""
    df = df.assign(numel=df.layer.map(numel).astype(np.float64))
    out = []
    for (step, epoch, kind, stat), g in df.groupby(["step", "epoch", "kind", "stat"], sort=True):
        if stat == "grad_norm":
            v = float(np.sqrt(np.sum(g.value.to_numpy() ** 2)))
        else:
            v = float(np.average(g.value, weights=g.numel))
        out.append((step, epoch, kind, stat, v, len(g)))
    return pd.DataFrame(out, columns=["step", "epoch", "kind", "stat", "value", "layers"])


def _stat_frames(runs: list[Run], stat: str) -> list[pd.DataFrame]:
    """Each run's ``param_stats([stat])``; a run without ``/params`` is a ``GradlabError``."""
    frames = []
    for r in runs:
        if not r.has_param_stats:
            raise GradlabError(f"{r.path} has no /params group (it ran with track.param_stats = \"off\"); "
                               f"re-run with track.param_stats = \"epoch\"")
        frames.append(r.param_stats([stat]))
    return frames


def _kinds_and_by(frames: list[pd.DataFrame], kinds: Sequence[str] | None, by: str) -> tuple[list[str], str]:
    """The kinds to draw (default: every kind present, in ``KIND_ORDER``) and ``by`` with "auto" resolved."""
    present = _sorted_kinds([k for f in frames for k in f.kind.unique()])
    kinds_ = list(kinds) if kinds is not None else present
    missing = [k for k in kinds_ if k not in present]
    if missing:
        raise ValueError(f"kinds {missing} are not in these runs; they have {present}")
    if by == "auto":
        most = max((f[f.kind == k].layer.nunique() for f in frames for k in kinds_), default=0)
        by = "layer" if most <= 12 else "kind"
    if by not in ("layer", "kind"):
        raise ValueError(f'by must be "layer", "kind" or "auto", got {by!r}')
    return kinds_, by


def _add_kind_traces(fig: go.Figure, row: int, d: pd.DataFrame, kind: str, numel: pd.Series, stat: str, x: str,
                     by: str, at: float | None, style: dict[str, str], shown: bool) -> bool:
    """One run's traces in the panel of ``kind`` (``d``: its rows of that kind); whether its legend entry is shown."""
    label, color, dash = style["label"], style["color"], style["dash"]
    if x == "layer":
        epochs = np.sort(d.epoch.unique())
        e = epochs[-1] if at is None else epochs[np.argmin(np.abs(epochs - at))]
        d = d[d.epoch == e].sort_values("depth")
        fig.add_trace(go.Scatter(
            x=np.arange(len(d)), y=d.value, mode="lines+markers", name=label, legendgroup=label,
            showlegend=not shown, line=dict(color=color, dash=dash, width=2), marker=dict(size=5),
            customdata=d.layer, hovertemplate=f"{html.escape(label)}<br>%{{customdata}}<br>epoch {e:g}"
                                              f"<br>{stat} %{{y:.4g}}<extra></extra>"), row=row, col=1)
        return True
    if by == "kind":
        a = kind_aggregate(d, numel)
        fig.add_trace(go.Scatter(
            x=a[x], y=a.value, mode="lines", name=label, legendgroup=label, showlegend=not shown,
            line=dict(color=color, dash=dash, width=2.5),
            hovertemplate=f"{html.escape(label)}<br>{kind} ({a.layers.iloc[0]} tensors)<br>{x} %{{x:.3g}}"
                          f"<br>{stat} %{{y:.4g}}<extra></extra>"), row=row, col=1)
        return True
    for layer, g in d.groupby("layer", sort=False):
        fig.add_trace(go.Scatter(
            x=g[x], y=g.value, mode="lines", name=label, legendgroup=label, showlegend=not shown,
            line=dict(color=color, dash=dash, width=1.2), opacity=0.75,
            hovertemplate=f"{html.escape(label)}<br>{html.escape(str(layer))}<br>{x} %{{x:.3g}}"
                          f"<br>{stat} %{{y:.4g}}<extra></extra>"), row=row, col=1)
        shown = True
    return shown


def param_stats(runs: Run | Sequence[Run], stat: str = "mean", kinds: Sequence[str] | None = None,
                x: str = "epoch", by: str = "auto", at: float | None = None, names: Sequence[str] | None = None,
                log_y: bool | None = None) -> go.Figure:
    """One figure of a parameter statistic, faceted by parameter kind (one panel per kind).

    - ``stat``: mean | var | grad_norm (see ``gradlab.track.paramstats``).
    - ``x = "epoch" | "step"``: the statistic across training. ``by = "layer"`` draws one thin
      line per (run, layer); ``by = "kind"`` one thick line per run for the kind aggregate
      (``kind_aggregate``); ``"auto"`` picks "layer" when no kind has more than 12 tensors.
    - ``x = "layer"``: the paper's Fig. 5 view: the statistic per layer (forward order within
      the kind) at epoch ``at`` (default: each run's last recording), one line per run.
    - ``names``: legend names of the runs (default: run-file stems).
    - ``log_y``: default on for var and grad_norm, whose values span decades across layers.
    """
    runs_ = _runs(runs)
    if not runs_:
        raise ValueError("param_stats needs at least one run")
    if stat not in Run.PARAM_STATS:
        raise ValueError(f"stat must be one of {Run.PARAM_STATS}, got {stat!r}")
    if x not in ("epoch", "step", "layer"):
        raise ValueError(f'x must be "epoch", "step" or "layer", got {x!r}')
    labels = _names(runs_, names)
    frames = _stat_frames(runs_, stat)
    kinds_, by = _kinds_and_by(frames, kinds, by)
    if log_y is None:
        log_y = stat in ("var", "grad_norm")

    fig = make_subplots(rows=len(kinds_), cols=1, shared_xaxes=x != "layer",
                        vertical_spacing=min(0.08, 0.3 / max(len(kinds_), 1)), subplot_titles=list(kinds_))
    for ri, (run, label, df) in enumerate(zip(runs_, labels, frames)):
        style = dict(label=label, color=COLORS[ri % len(COLORS)], dash=DASHES[ri % len(DASHES)])
        shown = False
        numel = run.layers().set_index("layer").numel
        for row, kind in enumerate(kinds_, start=1):
            d = df[df.kind == kind]
            if d.empty:
                continue
            shown = _add_kind_traces(fig, row, d, kind, numel, stat, x, by, at, style, shown)
        for row in range(1, len(kinds_) + 1):
            fig.update_yaxes(type="log" if log_y else "linear", row=row, col=1)
    xtitle = {"epoch": "epochs trained", "step": "optimizer step", "layer": "layer (forward order within kind)"}[x]
    fig.update_xaxes(title_text=xtitle, row=len(kinds_), col=1)
    what = {"layer": "per layer", "kind": "aggregate per kind"}[by] if x != "layer" else "per layer"
    fig.update_layout(
        title=dict(text=f"<b>parameter {STAT_TITLES[stat]}</b> — {what}, by parameter kind"),
        template="plotly_white", height=120 + 230 * len(kinds_), width=1050,
        legend=dict(title="run", x=1.01, y=1.0, xanchor="left", yanchor="top"),
        margin=dict(t=80, b=60, l=70, r=20),
    )
    return fig


def agc_lambda(run: Run, x: str = "epoch") -> go.Figure:
    """AGC λ per layer across training (the *Deep Control* paper's stated next step).

    Left: the mean of each AGC layer's λ vector against ``x`` (epoch | step), coloured by
    depth (dark = near the input, yellow = near the output). Right: λ per AGC layer at the
    last recording, mean ± standard deviation over the layer's channels; λ starts at 1.
    """
    if x not in ("epoch", "step"):
        raise ValueError(f'x must be "epoch" or "step", got {x!r}')
    df = run.param_stats(["mean", "var"])
    df = df[df.kind == "agc.lambda"]
    if df.empty:
        norm = run.config.get('model', {}).get('norm')
        raise GradlabError(f"{run.path} has no AGC λ statistics (model.norm = {norm!r}, "
                           f"track.param_stats = {run.config.get('track', {}).get('param_stats', 'epoch')!r}); "
                           f"agc_lambda needs a run with model.norm = \"agc\" and parameter statistics on")
    mean = df[df.stat == "mean"]
    var = df[df.stat == "var"]
    layers = list(dict.fromkeys(mean.sort_values("depth").layer))
    n = len(layers)
    colors = sample_colorscale("Viridis", [i / max(n - 1, 1) for i in range(n)])
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1,
                        subplot_titles=["λ (channel mean) across training", "λ at the end, per AGC layer"])
    for i, layer in enumerate(layers):
        g = mean[mean.layer == layer]
        fig.add_trace(go.Scatter(x=g[x], y=g.value, mode="lines", line=dict(color=colors[i], width=1.4),
                                 name=layer, showlegend=False,
                                 hovertemplate=f"{html.escape(layer)} (AGC layer {i})<br>{x} %{{x:.3g}}"
                                               f"<br>λ mean %{{y:.4g}}<extra></extra>"), row=1, col=1)
    last = mean.epoch.max()
    m_last = mean[mean.epoch == last].set_index("layer").value.reindex(layers)
    sd_last = np.sqrt(var[var.epoch == last].set_index("layer").value.reindex(layers).clip(lower=0))
    fig.add_trace(go.Scatter(
        x=np.arange(n), y=m_last.to_numpy(), mode="markers+lines",
        error_y=dict(type="data", array=sd_last.to_numpy(), visible=True, thickness=1),
        marker=dict(color=np.arange(n), colorscale="Viridis", size=7,
                    colorbar=dict(title="AGC layer<br>(depth)", x=1.02)),
        line=dict(color="rgba(80,80,80,0.4)", width=1), customdata=layers, showlegend=False,
        hovertemplate="%{customdata}<br>λ = %{y:.4g} ± %{error_y.array:.3g}<extra></extra>"), row=1, col=2)
    for col in (1, 2):
        fig.add_hline(y=1.0, line=dict(color="grey", dash="dot", width=1), row=1, col=col)
    fig.update_xaxes(title_text={"epoch": "epochs trained", "step": "optimizer step"}[x], row=1, col=1)
    fig.update_xaxes(title_text="AGC layer (forward order)", row=1, col=2)
    fig.update_yaxes(title_text="λ", row=1, col=1)
    fig.update_layout(title=dict(text=f"<b>AGC mean-subtraction scale λ</b> — {html.escape(run.path.stem)} "
                                      f"({n} AGC layers, last recording at epoch {last:g})"),
                      template="plotly_white", height=460, width=1100, margin=dict(t=90, b=60, l=60, r=40))
    return fig
