"""Is it the image property or the class mix? (the convergence study, studies/convergence.toml)

Every metric's contiguous (the paper's) and class-balanced cut, against two controls:
``random`` and ``random@class`` (class-stratified random batches), per phase, over seeds. Two
differences per metric answer the question:

- class mix: D(m) - D(m@class) in random units, how much closer or farther the metric's batches
  are because sorting by the metric also sorts by class;
- image property beyond class balance: D(m@class) in random@class units, minus 1: below 0, the
  metric's homogeneous batches beat class-balanced random ones; above 0, they are worse.

The metrics and cuts are the run's own (``track.probes``, ``track.batching``); a third table gives
every probe's D to the common target (the random probe's full gradient), in the same unit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gradlab.registry import CLASS_CONTROL, RANDOM, probe_name
from gradlab.report.summary import seed_summary
from gradlab.results import stats
from gradlab.results.catalog import CONVERGENCE, DATASET_NAMES
from gradlab.results.common import by_variant, final, seed_means
from gradlab.results.markdown import ci, interval_words, num, setting_line, table
from gradlab.runfile.reader import Run

COMPOSITION = ("label_entropy", "top_class_share")


def metrics(runs: list[Run]) -> list[str]:
    """The image metrics the runs probed (``track.probes`` less the random control), in study order."""
    return [m for m in runs[0].config["track"]["probes"] if m != RANDOM]


def cuts(runs: list[Run]) -> list[str]:
    """The cuts the runs probed every metric in (``track.batching``)."""
    return list(runs[0].config["track"]["batching"])


def probes(runs: list[Run]) -> list[str]:
    """The rows of the tables: the two controls, then every metric in every cut."""
    return [RANDOM, CLASS_CONTROL] + [probe_name(m, c) for m in metrics(runs) for c in cuts(runs)]


def unit_table(runs: list[Run], unit: str, target: str = "own") -> str:
    phases = range(runs[0].num_phases)
    rows = [[f"`{p}`"] + [ci(*stats.interval(seed_means(runs, p, ph, unit, target=target))) for ph in phases]
            for p in probes(runs)]
    return table(["probe"] + [f"phase {ph} (lr {runs[0].phase_lr(ph):g})" for ph in phases], rows)


def decomposition(runs: list[Run]) -> tuple[str, list[str]]:
    """The two differences per metric and phase, and one generated sentence per metric."""
    rows, lines = [], []
    for m in metrics(runs):
        mix, prop = [], []
        for ph in range(runs[0].num_phases):
            mix.append(stats.interval(seed_means(runs, m, ph, RANDOM) - seed_means(runs, m + "@class", ph, RANDOM)))
            prop.append(stats.interval(seed_means(runs, m + "@class", ph, CLASS_CONTROL) - 1.0))
        rows.append([f"`{m}`", "class mix: D(m) − D(m@class), random units"] + [ci(*x) for x in mix])
        rows.append([f"`{m}`", "beyond class balance: D(m@class) − 1, random@class units"] + [ci(*x) for x in prop])
        lines.append(f"`{m}`: " + "; ".join(
            f"phase {ph}: class mix {interval_words(mix[ph], *_MIX_WORDS)}, its class-balanced batches are "
            f"{interval_words(prop[ph], *_PROP_WORDS)} random@class" for ph in range(len(mix))) + ".")
    head = ["metric", "difference"] + [f"phase {ph}" for ph in range(runs[0].num_phases)]
    return table(head, rows), lines


_MIX_WORDS = ("makes its batches farther", "makes its batches closer", "is not distinguishable from 0",
              "has no interval yet (one seed)")
_PROP_WORDS = ("farther than", "closer than", "not distinguishable from", "without an interval (one seed) against")


def own_full_table(runs: list[Run]) -> str:
    """|G| of each probe's own pass over |G| of the random pass, per phase: each probe's D is taken to
    its own partition's mean gradient, and with BatchNorm partitions differ (1 = the same size)."""
    phases = range(runs[0].num_phases)
    ref = [r.epoch_table(RANDOM)["full_norm"].to_numpy() for r in runs]
    rows = []
    for p in probes(runs):
        cells = []
        for ph in phases:
            vals = [np.mean(r.epoch_table(p)["full_norm"].to_numpy()[r.phase_epochs(ph)] / g[r.phase_epochs(ph)])
                    for r, g in zip(runs, ref)]
            cells.append(ci(*stats.interval(np.array(vals))))
        rows.append([f"`{p}`"] + cells)
    return table(["probe"] + [f"phase {ph}" for ph in phases], rows)


def composition_table(runs: list[Run]) -> str:
    """Mean label entropy (nats) and top-class share of each probe's batches, over batches, epochs, seeds."""
    rows = []
    for p in probes(runs):
        vals = [np.mean([r.quantity(p, q)[q].mean() for r in runs]) for q in COMPOSITION]
        rows.append([f"`{p}`"] + [num(v) for v in vals])
    return table(["probe", "label entropy (nats)", "top-class share"], rows)


POOLED_PERMUTATIONS = 2000  # the report's default; p resolves to 1 / 2001


def pooled_table(runs: list[Run]) -> tuple[str, str]:
    """The report's seed summary of every probe and phase (``gradlab.report.summary.seed_summary``):
    the closest quartile of the seed mean, its pooled one-sided p and the test that gave it, Holm
    over the table; and one generated sentence counting the rows at or below ``stats.ALPHA``."""
    df = seed_summary(runs, n_perm=POOLED_PERMUTATIONS, seed=0)
    phases = sorted(df.phase.unique())
    rows = []
    for probe, g in df.groupby("probe", sort=False):
        by = g.set_index("phase")
        rows.append([f"`{probe}`", by.pooled_test.iloc[0]] + [
            f"{by.best_label[ph].split(' ')[0]}: {num(by.p_value[ph])} ({num(by.p_holm[ph])})" for ph in phases])
    raw = int(sum(stats.rejects(p) for p in df.p_value))
    holm = int((df.verdict == "beats chance").sum())
    tests = df.pooled_test.value_counts()
    text = (f"Of the {len(df)} pooled tests ({', '.join(f'{n} {t}' for t, n in tests.items())}), {raw} have p at or "
            f"below {stats.ALPHA} and {holm} beat chance after Holm over the table's {int(df.n_tests.iloc[0])} tests.")
    head = ["probe", "test"] + [f"phase {ph}: closest quartile: p (Holm)" for ph in phases]
    return table(head, rows), text


def accuracy_line(runs: list[Run], seeds: tuple[int, ...]) -> str:
    acc = final(runs, "test_acc")
    return (f"Final test accuracy (10 classes, chance 0.1), seeds {', '.join(map(str, seeds))}: "
            f"{', '.join(num(a) for a in acc)}; mean {ci(*stats.interval(acc))}.")


def page(runs: dict, root: Path) -> str:
    out = [_INTRO]
    for v in CONVERGENCE.variants:
        rs = by_variant(runs, v)
        dec, lines = decomposition(rs)
        out += [f"## {DATASET_NAMES[v]}\n", setting_line(rs), accuracy_line(rs, CONVERGENCE.seeds) + "\n",
                "### Mean D in random units (1 = the `random` probe's mean D at the same epoch)\n",
                unit_table(rs, RANDOM),
                "### Mean D in random@class units (1 = class-stratified random batches)\n",
                unit_table(rs, CLASS_CONTROL), "### How much of each metric's distance is class mix\n", dec,
                "Read from the intervals above (an interval that excludes 0 is named; the rest are not "
                "distinguishable at this number of seeds):\n", "\n".join(f"- {x}" for x in lines) + "\n",
                "### Class composition of the batches\n", composition_table(rs),
                "### Each probe's own full gradient, |G| / |G of random|\n", _OWN_FULL, own_full_table(rs),
                "### Mean D to the common target, in random units\n", _COMMON, unit_table(rs, RANDOM, "common"),
                "### The closest quartile against chance, pooled over seeds\n", _POOLED]
        pooled, sentence = pooled_table(rs)
        out += [sentence + "\n", pooled]
    return "\n".join(out)


_OWN_FULL = """Every probe's D[e, k] is the distance to the mean gradient of that probe's own batches,
which cover the training set once. Without BatchNorm every such partition has the same mean;
with it each batch is normalised by its own statistics, so a metric-sorted partition's mean
gradient can differ from random batches' mean. Where this ratio is below 1, part of a probe's
small D comes from a smaller target, not from batches closer to the random pass's ∇_e.
"""
_COMMON = """The same batches' distance to one target for every probe: the `random` probe's full
gradient at the same θ_e (`common_distance_l2`), divided by the `random` probe's mean D at that
epoch (the unit of the first table). For `random` it is its own D; without BatchNorm it would
equal each probe's own D. Where a probe's value here differs from the first table, its own
partition's mean gradient is a different target.
"""
_POOLED = f"""The report's seed summary (`gradlab report` with the seeds together): per probe and phase,
the quartile of batches by score whose mean D over seeds is smallest, and a one-sided p that it
is closer than chance. A metric's fixed order puts the same images in the same batches in every
seed, so one permutation of the batches between quartiles is applied to every seed (*shared
permutation*, {POOLED_PERMUTATIONS} permutations); where the batches differ between seeds (a
control drawn from the seed, or an order rebuilt at each θ_e), each seed's best quartile minus
its own chance level is tested over seeds (*t over seeds*). In brackets: Holm over the table.
"""
_INTRO = """# Image property or class mix?

Every image metric's batches, cut two ways, against two controls, on MNIST and Fashion-MNIST
(`studies/convergence.toml`, the setting above each dataset's tables): smallcnn with BatchNorm,
probes taken at every epoch-start θ_e in train mode (batch statistics), never augmented. D is
taken at the start of each epoch, so epoch 0, in phase 0, is the untrained initialisation θ₀; a
phase's value is the mean over its epochs. Cuts:

- `m`: the paper's contiguous cut of the images sorted by metric `m`;
- `m@class`: sorted within each class, every batch holding every class in the dataset's proportion.

MNIST and Fashion-MNIST are greyscale: hue and saturation are 0, so `hsv` would sort as
`intensity` does, and the study leaves it out. Controls: `random` (the common unit) and
`random@class` (class-stratified random batches). Each cell is the mean over seeds of each seed's
mean D over the phase's batches, with a 95% Student-t interval over seeds (n − 1 degrees of
freedom; with one seed there is no interval). No correction for multiple comparisons is applied
on this page; the verdicts on the [claims page](claims.md) are Holm-corrected.
"""
