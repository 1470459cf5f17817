"""``gradlab report``: one self-contained, offline HTML page for one or several runs.

Sections: runs at a glance, the phase summary (which quantile of batches is closest to
the full gradient, per phase, against chance), across seeds (intervals and seed-mean
heatmaps, when seeds of one study are given together), distance heatmaps per probe and phase,
per-layer distances, gradient norms and noise scale, train/test curves, parameter
statistics (runs with ``/params``), and provenance. Several runs are compared side by
side: heatmaps in columns, line plots overlaid with one colour per run.

This module assembles the page: one function per section, ``build_report`` and
``write_report``. The figures are in ``gradlab.report.figures`` (and ``plots``,
``paramplots``), the HTML pieces in ``gradlab.report.html``, seed grouping in
``gradlab.report.summary`` and PNG export in ``gradlab.report.png``.

plotly.js is inlined once in ``<head>``; the page fetches nothing. ``png_dir`` also
writes every figure as a static PNG through kaleido, which drives a local Chromium.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

from gradlab.config import flatten
from gradlab.errors import GradlabError
from gradlab.report import plots
from gradlab.report.compare import UNIT_PREFIX, has_references, reference_comparison
from gradlab.report.figures import (CONTROL_COLOUR, PROBE_COLOURS, RUN_COLOURS, curves_figure,  # noqa: F401
                                    layer_figure, norms_figure, seed_figure, shared_range, summary_profile_figure,
                                    with_relative_toggle)
from gradlab.report.html import (CSS, PLOT_CONFIG, Fig, Section, esc, fig_html, fmt, html_page,  # noqa: F401
                                 reference_table, runs_table, slugify, summary_table, tidy)
from gradlab.report.png import CHROMIUM_NAMES, BrowserMissingError, export_pngs, find_chromium  # noqa: F401
from gradlab.report.summary import (CONTROL, bin_label, holm_across, phase_summary, pooled_noise_scale,
                                    seed_groups)
from gradlab.report.units import CLASS_CONTROL, has_control, random_unit
from gradlab.runfile import names as runnames
from gradlab.runfile.reader import Run, open_run


@dataclass
class Report:
    """What ``write_report`` produced."""

    html: Path
    figures: int
    pngs: list[Path] = field(default_factory=list)


def run_names(runs: Sequence[Run]) -> list[str]:
    """Short unique names: the file stem, or parent/stem when stems repeat."""
    stems = [r.path.stem for r in runs]
    names = [s if stems.count(s) == 1 else f"{r.path.parent.name}/{s}" for s, r in zip(stems, runs)]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]


def _all_probes(runs: Sequence[Run]) -> list[str]:
    seen: list[str] = []
    for r in runs:
        seen += [p for p in r.probes if p not in seen]
    return sorted(seen, key=lambda p: (p == CONTROL, p))


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
                                              f"{_dig(r.config, ('train', 'milestones'))} / "
                                              f"{_dig(r.config, ('train', 'gamma'))}"),
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


class _Page:
    """What every section needs: the runs, their names and colours, and the figures so far."""

    def __init__(self, runs: Sequence[Run], measure: str, bins: int, n_perm: int):
        self.runs, self.bins, self.n_perm = list(runs), bins, n_perm
        self.names = run_names(runs)
        self.colours = {n: RUN_COLOURS[i % len(RUN_COLOURS)] for i, n in enumerate(self.names)}
        self.probes = _all_probes(runs)
        self.multi = len(runs) > 1
        self.figs: list[Fig] = []
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
        f = Fig(tidy(fig, narrow=False), slugify(*slug))
        self.figs.append(f)
        return f"<div class='card'>{fig_html(f)}</div>"

    def fig_inner(self, fig: go.Figure | None, *slug: object) -> str:
        """A figure for a grid cell (narrow when runs are side by side)."""
        if fig is None:
            return "<p class='note'>nothing stored</p>"
        f = Fig(tidy(fig, narrow=self.multi), slugify(*slug))
        self.figs.append(f)
        return fig_html(f)

    def grid(self, items: list[tuple[str, str]]) -> str:
        """Cards side by side, one column per run; items are (run name, inner html)."""
        if not self.multi:
            return f"<div class='card'>{items[0][1]}</div>"
        cells = "".join(f"<div class='card'><div class='runname'><span class='swatch' style='background:"
                        f"{self.colours[n]}'></span>{esc(n)}</div>{inner}</div>" for n, inner in items)
        return f"<div class='grid' style='--cols:{len(items)}'>{cells}</div>"


def _glance_section(pg: _Page) -> Section:
    return ("runs", "Runs at a glance", "<p class='note'>One column per run. Rows where runs differ are "
            "highlighted.</p>" + runs_table(pg.runs, pg.names, pg.colours, _glance_keys()))


def _summary_intro(bins: int, n_perm: int) -> str:
    qname = {4: "quartiles", 10: "deciles", 5: "quintiles"}.get(bins, f"{bins} quantile bins")
    return (
        f"<p class='note'>The paper's question, per training phase (a span of constant learning rate): "
        f"<b>which quantile of batches, by metric score, is closest to the full gradient ∇<sub>e</sub>?</b> "
        f"<b>Unit:</b> each epoch's distances are divided by the <code>{CONTROL}</code> control's mean D at the same "
        f"epoch (same θ<sub>e</sub>, same ∇<sub>e</sub>), so every probe is in one common unit and late epochs, "
        f"whose D "
        f"is smaller, weigh the same; then averaged over the phase and grouped into score {qname} "
        f"({bin_label(0, bins)} = lowest scores). Cells show each bin's mean D in that unit: <b>1.00 is a typical "
        f"random batch, below 1 is closer</b>, lighter is closer; the closest bin is outlined. A run without the "
        f"control falls back to each probe's own epoch mean (the table says so in its unit column). "
        f"<i>gain</i> is 1 − the best bin's value. <i>extremes / middle</i> compares the two outer bins with the rest. "
        f"<i>chance best</i> is the best-bin value expected when batches are put into bins at random "
        f"(permutation test, {n_perm} shuffles; <i>p</i> is the share of shuffles whose best bin is as close; "
        f"in brackets, Holm-corrected across all the table's tests, every run's rows together). "
        f"The <code>{CONTROL}</code> probe, binned the same way by batch number, shows what no signal looks like: "
        f"its best bin and the spread between its bins; <i>gain ÷ control spread</i> above 1 means the metric's "
        f"best bin "
        f"is further below 1 than the random control's bins spread. A metric beats chance when its "
        f"Holm-corrected p is at or below 0.05, which keeps the chance of any false verdict in the table at 5%.</p>")


def _summary_section(pg: _Page) -> Section:
    # one Holm family per table the reader sees: every run's rows in it, corrected together
    summaries = {m: holm_across({n: phase_summary(r, measure=m, bins=pg.bins, n_perm=pg.n_perm)
                                 for n, r in zip(pg.names, pg.runs)}) for m in pg.measures}
    main = pg.measure
    prof = summary_profile_figure(summaries.get(main, {}), pg.bins, pg.probes, main)
    body = (_summary_intro(pg.bins, pg.n_perm) + f"<h3>Distance measure: {esc(main)}</h3>"
            + summary_table(summaries.get(main, {}), pg.colours, pg.bins, main) + pg.add(prof, "summary_profile", main))
    for m in pg.measures:
        if m != main:
            body += (f"<details><summary>Same table for the {esc(m)} distance</summary>"
                     + summary_table(summaries[m], pg.colours, pg.bins, m) + "</details>")
    return ("summary", "Phase summary: which batches are closest?", body + _class_unit_summary(pg))


def _class_unit_summary(pg: _Page) -> str:
    """The phase summary again in the second control's unit, for the runs that have
    ``random@class`` (class-stratified random batches); nothing for runs without it."""
    with_class = [(n, r) for n, r in zip(pg.names, pg.runs) if has_control(r, pg.measure, CLASS_CONTROL)]
    if not with_class:
        return ""
    summaries = holm_across({n: phase_summary(r, measure=pg.measure, bins=pg.bins, n_perm=pg.n_perm,
                                              control=CLASS_CONTROL) for n, r in with_class})
    return (f"<h3>In units of <code>{CLASS_CONTROL}</code> ({esc(pg.measure)})</h3><p class='note'>The same "
            f"summary with each epoch's distances divided by the <code>{CLASS_CONTROL}</code> control's mean D: "
            f"class-stratified random batches, which hold every class in the dataset's proportion and are otherwise "
            f"random. Below 1 here means closer than a class-balanced random batch, so what a metric order gains "
            f"over <code>{CONTROL}</code> but not over <code>{CLASS_CONTROL}</code> is class mix, not the image "
            f"property.</p>" + summary_table(summaries, pg.colours, pg.bins, pg.measure, control=CLASS_CONTROL))


def _heatmap_cell(pg: _Page, i: int, run: Run, name: str, probe: str, ph: int,
                  ranges: dict[int, tuple[float, float]]) -> str:
    """One run's heatmap of ``probe`` in phase ``ph``, or a note saying why there is none."""
    if probe not in run.probes or ph >= run.num_phases:
        return f"<p class='note'>no {esc(probe)} probe or phase {ph} in this run</p>"
    if pg.measure not in run.measures(probe):
        return (f"<p class='note'>no {esc(pg.measure)} distances in this run (it stores "
                f"{esc(', '.join(run.measures(probe)) or 'none')}; choose with --measure)</p>")
    fig = plots.heatmap(run, probe, ph, pg.measure)
    if i in ranges:
        fig.update_traces(zmin=ranges[i][0], zmax=ranges[i][1])
    if pg.multi:
        fig.update_xaxes(title_text=f"batch, by {run.score_label(probe)}", title_font_size=11)
    unit = random_unit(run, pg.measure)[run.phase_epochs(ph)] if has_control(run, pg.measure) else None
    with_relative_toggle(fig, unit)
    return pg.fig_inner(fig, "heatmap", name, probe, f"phase{ph}")


def _heatmaps_section(pg: _Page) -> Section:
    body = (f"<p class='note'>D[e, k] = ‖∇<sub>k</sub> − ∇<sub>e</sub>‖ ({esc(pg.measure)}) for every epoch e "
            "(rows) and batch k (columns, in probe order, labelled by score), at the epoch-start parameters "
            "θ<sub>e</sub>. "
            "Light = close to the full gradient, dark = far, as in the paper. Within one run and phase, all probes "
            "share one colour range, so the metric and the random control compare directly. D shrinks as training "
            "converges, so early epochs dominate the colours: the <i>D / epoch mean</i> button above each heatmap "
            "divides every row by its mean over batches and shows the pattern across batches within each epoch "
            "(the quantity the phase summary averages)."
            + (" Runs are side by side, one column each." if pg.multi else "") + "</p>")
    nph = max((r.num_phases for r in pg.runs), default=0)
    for ph in range(nph):
        ranges = shared_range(pg.runs, ph, pg.probes, pg.measure)
        for probe in pg.probes:
            items = [(name, _heatmap_cell(pg, i, run, name, probe, ph, ranges))
                     for i, (run, name) in enumerate(zip(pg.runs, pg.names))]
            body += f"<h3>Phase {ph} — {esc(probe)}</h3>" + pg.grid(items)
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
        body += f"<h3>{esc(probe)}</h3>" + pg.grid(items)
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
            rows.append(f"<tr><td>{esc(name)}</td><td>{esc(r.probe)}</td><td>{r.phase}</td><td>{r.epochs}</td>"
                        f"<td>{r.undefined}</td><td>{fmt(r.median_epoch)}</td><td><b>{fmt(r.pooled)}</b></td></tr>")
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
            "(rows where runs differ are highlighted).</p>" + runs_table(pg.runs, pg.names, pg.colours, keys))


def _seeds_section(pg: _Page) -> Section | None:
    groups = seed_groups(pg.runs)
    body = ("<p class='note'>Runs that differ only in <code>train.seed</code> are summarised together: each score "
            "bin's mean D across seeds, in the random control's unit, with a 95% Student-t interval over seeds "
            "(n − 1 degrees of freedom), the control's interval in the same bin, and one pooled p-value per row, "
            "one-sided (the best bin closer than chance). Where the probe's batches hold the same images in every seed "
            "(a fixed order), one permutation of the batches between score bins is applied to every seed "
            "(<i>shared permutation</i>): a batch's effect is shared by the seeds and moves with it. Where the batches "
            "differ between seeds (orders rebuilt at each θ<sub>e</sub>, or seed-dependent orders), each seed's best "
            "bin minus its own chance level is tested over seeds with a one-sided t-test (<i>t over seeds</i>). Each "
            "run's batches are binned by its own scores. p (Holm): corrected across the group's probe × phase tests; "
            "a verdict rejects at p ≤ 0.05.</p>")
    if not groups:
        return None  # the section appears only when seeds of one study are given together
    for g in groups:
        runs = [pg.runs[i] for i in g]
        s = phase_summary(runs, measure=pg.measure, bins=pg.bins, n_perm=pg.n_perm)
        title = f"{len(runs)} seeds: " + ", ".join(pg.names[i] for i in g)
        rows = "".join(
            f"<tr><td>{esc(r.probe)}</td><td>{r.phase}</td><td>{esc(r.best_label)}</td>"
            f"<td class='num'>{r.best_rel:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]</td>"
            f"<td class='num'>{r.get('control_rel', np.nan):.3f} [{r.get('control_ci_low', np.nan):.3f}, "
            f"{r.get('control_ci_high', np.nan):.3f}]</td><td class='num'>{r.p_value:.3f} ({r.p_holm:.3f})</td>"
            f"<td>{esc(r.pooled_test)}</td><td>{esc(r.verdict)}</td></tr>" for _, r in s.iterrows())
        body += (f"<h3>{esc(title)}</h3><table class='summary'><tr><th>probe</th><th>phase</th><th>closest bin</th>"
                 f"<th>D (95% CI)</th><th>{CONTROL} control, same bin</th><th>p (pooled; Holm)</th>"
                 f"<th>test</th><th>verdict</th></tr>"
                 f"{rows}</table><p class='note'>Holm family: the {int(s.n_tests.iloc[0]) if len(s) else 0} "
                 f"tests of this table.</p>" + pg.add(seed_figure(s, pg.bins, title), "seeds", *g)
                 + _seed_heatmaps(pg, g))
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
            "cut (batch k takes sorted positions k, k + K, ...); <code>@class</code>: the class cut (sorted within "
            "each class, every batch holds every class in proportion at one within-class quantile). Runs with "
            f"<code>{CLASS_CONTROL}</code> (class-stratified random batches) also give mean and best-bin D in its "
            "unit. Intervals: 95% Student-t over seeds.</p>")
    for g in groups:
        runs = [pg.runs[i] for i in g]
        t = reference_comparison(runs, measure=pg.measure, bins=pg.bins)
        prefix = UNIT_PREFIX[CLASS_CONTROL]
        second = (prefix, CLASS_CONTROL) if f"{prefix}_mean_rel" in t.columns else None
        title = (f"{len(runs)} seeds: " if len(runs) > 1 else "") + ", ".join(pg.names[i] for i in g)
        body += f"<h3>{esc(title)}</h3>"
        for ph in sorted(t.phase.unique()):
            body += (f"<h4>Phase {ph}</h4>" + reference_table(t[t.phase == ph], second)
                     + pg.add(plots.reference_figure(t, ph), "references", ph, *g))
    return ("references", "Reference orders: between random and gradient-informed batches", body)


SECTIONS = (_glance_section, _summary_section, _references_section, _seeds_section, _heatmaps_section,
            _layers_section, _norms_section,
            _curves_section, lambda pg: ("params", "Parameter statistics", _params_section(pg.runs, pg.names, pg.add)),
            _provenance_section)


def build_report(runs: Sequence[Run], measure: str = "l2", bins: int = 4, n_perm: int = 2000,
                 title: str | None = None) -> tuple[str, list[Fig]]:
    """The report page as HTML text, plus its figures (for PNG export): one function per section."""
    if not runs:
        raise GradlabError("gradlab report needs at least one run file")
    pg = _Page(runs, measure, bins, n_perm)
    sections = [s for s in (make(pg) for make in SECTIONS) if s is not None]
    return html_page(title or ("gradlab report — " + ", ".join(pg.names)), len(runs), sections), pg.figs


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
