"""HTML pieces of the report page: the stylesheet, escaping and number formatting, figure
cards, the summary, runs and reference tables, and the page shell with plotly.js inlined once.
"""
from __future__ import annotations

import datetime
import html
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import sample_colorscale

from gradlab.version import __version__
from gradlab.report import plots
from gradlab.report.figures import CONTROL_COLOUR
from gradlab.report.summary import CONTROL, bin_label
from gradlab.runfile.reader import Run

Section = tuple[str, str, str]  # (anchor, title, html)

PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}


@dataclass
class Fig:
    """A figure of the page and its slug (HTML div id ``fig-<slug>``, PNG file name)."""

    fig: go.Figure
    slug: str


def slugify(*parts: object) -> str:
    """``parts`` joined with ``_``, anything but letters, digits, ``_.-`` replaced by ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(p) for p in parts)).strip("-")


def esc(x: object) -> str:
    """``x`` as HTML-escaped text."""
    return html.escape(str(x))


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table cell: ``digits`` significant digits, "–" for NaN and inf."""
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.{digits}e}"
    return str(v)


def cell_colour(v: float, lo: float, hi: float) -> tuple[str, str]:
    """Background and text colour for a relative-D value: light = close (as the heatmaps)."""
    if not np.isfinite(v):
        return "#ffffff", "#000000"
    t = 0.5 if hi <= lo else float(np.clip((v - lo) / (hi - lo), 0, 1))
    bg = sample_colorscale(plots.COLORSCALE, [0.05 + 0.8 * t])[0]
    return bg, ("#ffffff" if t > 0.55 else "#08306b")


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


def tidy(fig: go.Figure, narrow: bool) -> go.Figure:
    """Title below the mode bar (it sits top right), smaller in side-by-side columns."""
    top = (fig.layout.margin.t or 60) if fig.layout.margin else 60
    fig.update_layout(title=dict(yref="container", y=1, yanchor="top", pad=dict(t=30),
                                 font=dict(size=13 if narrow else 16)),
                      margin=dict(t=max(top, 78)), height=(fig.layout.height or 400) + max(0, 78 - top))
    return fig


def fig_html(f: Fig) -> str:
    return pio.to_html(f.fig, full_html=False, include_plotlyjs=False, config=PLOT_CONFIG,
                       div_id=f"fig-{f.slug}", default_height=f"{f.fig.layout.height or 400}px")


def summary_table(summaries: dict[str, pd.DataFrame], runs_colour: dict[str, str], bins: int,
                   measure: str, control: str = CONTROL) -> str:
    frames = [df.assign(run=name) for name, df in summaries.items() if len(df)]
    if not frames:
        return "<p class='note'>No committed epochs with distances yet.</p>"
    df = pd.concat(frames, ignore_index=True)
    bcols = [f"bin_{b + 1}" for b in range(bins)]
    vals = df[bcols].to_numpy(dtype=float)
    lo, hi = np.nanmin(vals), np.nanmax(vals)
    multi = len(summaries) > 1
    head = ["probe", "phase"] + (["run"] if multi else []) + [bin_label(b, bins) for b in range(bins)] + [
        "closest quantile (scores)", "gain (unit)", "extremes / middle", "chance best", "p (Holm)",
        f"<span class='swatch' style='background:{CONTROL_COLOUR}'></span>{esc(control)} control: best / spread",
        "gain ÷ control spread", "verdict"]
    out = ["<div class='tablewrap'><table class='summary'><thead><tr>",
           "".join(f"<th>{h}</th>" for h in head), "</tr></thead><tbody>"]
    df = df.sort_values(["probe", "phase"], kind="stable")
    for _, r in df.iterrows():
        cells = [f"<td><b>{esc(r.probe)}</b><br><span class='note'>{esc(r.score_label)}</span></td>",
                 f"<td>{int(r.phase)}<br><span class='note'>epochs {esc(r.epochs)}, lr {r.lr:g}</span></td>"]
        if multi:
            swatch = f"<span class='swatch' style='background:{runs_colour[r.run]}'></span>"
            cells.append(f"<td class='run'>{swatch}{esc(r.run)}</td>")
        for b in range(bins):
            v = float(r[f"bin_{b + 1}"])
            bg, fg = cell_colour(v, lo, hi)
            cls = "bin best" if b + 1 == int(r.best_bin) else "bin"
            cells.append(f"<td class='{cls}' style='background:{bg};color:{fg}'>{v:.3f}</td>")
        s_lo, s_hi = r.best_scores
        cells.append(f"<td><b>{esc(r.best_label)}</b><br><span class='note'>scores {fmt(s_lo)}–{fmt(s_hi)}</span></td>")
        unit = getattr(r, "unit", CONTROL)
        unit = f"vs {esc(unit)}" if unit != "own" else "vs own epoch mean (no control)"
        cells.append(f"<td class='num'>{-100 * r.gain:+.1f}%<br><span class='note'>{unit}</span></td>")
        cells.append(f"<td class='num'>{r.outer_rel:.3f} / {r.middle_rel:.3f}</td>")
        cells.append(f"<td class='num'>{r.chance_best_rel:.3f}</td>")
        cells.append(f"<td class='num'>{r.p_value:.3f} ({r.p_holm:.3f})</td>" if np.isfinite(r.p_value)
                     else "<td>–</td>")
        ctrl = ("–" if not np.isfinite(r.control_best_rel)
                else f"{r.control_best_rel:.3f} / {r.control_spread:.3f}")
        cells.append(f"<td class='num'>{ctrl}</td>")
        ratio = r.gain / r.control_spread if np.isfinite(r.control_spread) and r.control_spread > 0 else np.nan
        cells.append(f"<td class='num'>{ratio:.2f}</td>" if np.isfinite(ratio) else "<td>–</td>")
        cls = "yes" if r.verdict == "beats chance" else "no"
        cells.append(f"<td class='{cls}'>{esc(r.verdict)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    m = int(df.n_tests.iloc[0]) if "n_tests" in df and len(df) else 0
    out.append(f"<p class='note'>Holm family: the {m} permutation tests of this table, corrected together.</p>")
    return "".join(out)


def runs_table(runs: Sequence[Run], names: list[str], colours: dict[str, str], keys: list[tuple[str, Any]]) -> str:
    head = "<th></th>" + "".join(f"<th><span class='swatch' style='background:{colours[n]}'></span>{esc(n)}</th>"
                                 for n in names)
    rows = []
    for label, get in keys:
        vals = [get(r) for r in runs]
        strs = ["–" if v is None or v == "" else str(v) for v in vals]
        diff = len(runs) > 1 and len(set(strs)) > 1
        rows.append(f"<tr class='{'diff' if diff else ''}'><th>{esc(label)}</th>"
                    + "".join(f"<td>{esc(s)}</td>" for s in strs) + "</tr>")
    return f"<div class='tablewrap'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"


def ci_text(v: float, lo: float, hi: float) -> str:
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "")


def reference_table(t: pd.DataFrame, second: tuple[str, str] | None = None) -> str:
    """One phase of ``reference_comparison``; ``second = (column prefix, control)``: also the mean
    and best-bin D in that control's unit (``class_mean_rel``, ... for ``random@class``)."""
    def extra(r: Any) -> str:
        if second is None:
            return ""
        g = lambda c: getattr(r, f"{second[0]}_{c}")  # noqa: E731
        return (f"<td class='num'>{ci_text(g('mean_rel'), g('mean_ci_low'), g('mean_ci_high'))}</td>"
                f"<td class='num'>{ci_text(g('best_rel'), g('best_ci_low'), g('best_ci_high'))}</td>")

    rows = "".join(
        f"<tr><td>{esc(r.probe)}</td><td>{esc(r.kind)}</td><td>{esc(r.batching)}</td>"
        f"<td class='num'>{ci_text(r.mean_rel, r.mean_ci_low, r.mean_ci_high)}</td>"
        f"<td class='num'>{ci_text(r.best_rel, r.best_ci_low, r.best_ci_high)}</td>{extra(r)}"
        f"<td class='num'>{fmt(r.frac_mean, 2)}</td><td class='num'>{fmt(r.frac_best, 2)}</td></tr>"
        for r in t.itertuples())
    ref = t.iloc[0]
    more = "" if second is None else (f"<th>mean D ({esc(second[1])} unit)</th>"
                                      f"<th>best bin D ({esc(second[1])} unit)</th>")
    return (f"<table class='summary'><tr><th>probe</th><th>kind</th><th>cut</th><th>mean D</th><th>best bin D</th>"
            f"{more}<th>gain ÷ {esc(ref.ref_mean or 'reference')}'s (mean)</th><th>gain ÷ "
            f"{esc(ref.ref_best or 'reference')}'s (best bin)</th></tr>{rows}</table>")


def html_page(title: str, n_runs: int, sections: list[Section]) -> str:
    from plotly.offline import get_plotlyjs

    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = "".join(f"<li><a href='#{a}'>{esc(t)}</a></li>" for a, t, _ in sections)
    content = "".join(f"<section id='{a}'><h2>{esc(t)}</h2>{b}</section>" for a, t, b in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body><main>"
            f"<h1>{esc(title)}</h1><p class='lead'>{n_runs} run(s) · generated {when} by gradlab {__version__}</p>"
            f"<nav class='toc'><b>Contents</b><ol>{toc}</ol></nav>{content}</main></body></html>")
