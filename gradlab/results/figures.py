"""Figures of the results pages: pure functions from run files to PNG bytes.

matplotlib's Agg backend, without the PNG's "Software" text, writes the same bytes for the same
data and matplotlib version, so ``gradlab results --check`` can compare figures as it compares
tables. (The report's plotly figures go through Chromium, whose PNGs are not byte-stable.)
"""
from __future__ import annotations

import io

import numpy as np

from gradlab.registry import RANDOM, probe_name
from gradlab.results import stats
from gradlab.results.catalog import CONVERGENCE, DATASET_NAMES
from gradlab.results.classmix import cuts, metrics
from gradlab.results.common import by_variant, seed_means


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "gradlab", "font.size": 8})
    return plt


def class_mix(runs: dict) -> bytes:
    """Datasets x phases: mean D (random units) of each metric in each cut, with the random@class line."""
    plt = _plt()
    variants = CONVERGENCE.variants
    first = by_variant(runs, variants[0])
    phases, names, cut_names = first[0].num_phases, metrics(first), cuts(first)
    fig, axes = plt.subplots(len(variants), phases, figsize=(3.2 * phases, 2.4 * len(variants)), sharey=True,
                             squeeze=False)
    x, width = np.arange(len(names)), 0.8 / len(cut_names)
    for i, v in enumerate(variants):
        rs = by_variant(runs, v)
        for ph in range(phases):
            ax = axes[i, ph]
            for j, cut in enumerate(cut_names):
                m = [stats.interval(seed_means(rs, probe_name(name, cut), ph, RANDOM)) for name in names]
                err = np.nan_to_num(np.abs(np.array([[a[0] - a[1], a[2] - a[0]] for a in m]).T))  # one seed: none
                ax.bar(x + (j - (len(cut_names) - 1) / 2) * width, [a[0] for a in m], width, label=cut, yerr=err)
            ctrl = stats.interval(seed_means(rs, "random@class", ph, RANDOM))[0]
            ax.axhline(1.0, color="black", lw=0.8)
            ax.axhline(ctrl, color="grey", lw=0.8, ls="--", label="random@class")
            ax.set_xticks(x, names)
            ax.set_title(f"{DATASET_NAMES[v]}, phase {ph}")
            if ph == 0:
                ax.set_ylabel("mean D / random's")
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


def accuracy_vs_steps(runs: dict) -> bytes:
    """Test accuracy (mean over seeds) against cumulative optimisation steps: one panel per
    contrast and dataset, the arm against its control (``gradlab.results.steps``)."""
    from gradlab.results import steps as st

    plt = _plt()
    pairs = (*st.CONTRASTS, st.HOMOGENEITY)
    fig, axes = plt.subplots(len(st.DATASETS), len(pairs), figsize=(2.6 * len(pairs), 2.3 * len(st.DATASETS)),
                             sharey="row", squeeze=False)
    for i, d in enumerate(st.DATASETS):
        for j, c in enumerate(pairs):
            ax = axes[i][j]
            for v, style in ((c.arm, "-"), (c.control, "--")):
                x, y = st.accuracy_vs_steps(runs, d, (v,))[v]
                ax.plot(x, y, style, marker="o", ms=2.5, label=v)
            ax.set_title(f"{DATASET_NAMES[d]}: {c.panel}", fontsize=8)
            ax.set_xlabel("optimisation steps", fontsize=7)
            ax.legend(fontsize=6)
        axes[i][0].set_ylabel("test accuracy", fontsize=7)
    fig.tight_layout()
    return _png(fig)
