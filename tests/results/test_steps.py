"""Training contrasts at equal steps (gradlab.results.steps): refused at unequal steps, and the
paired difference recomputed by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradlab.errors import GradlabError
from gradlab.results import steps


class _Run:
    def __init__(self, acc, st):
        self.acc, self.st = np.asarray(acc, float), np.asarray(st, float)

    def train_curves(self):
        return pd.DataFrame({"test_acc": self.acc, "train_steps": self.st})


def _runs(acc_arm, acc_ctl, st_arm, st_ctl, seeds=3):
    out = {}
    for s in range(seeds):
        out[("mnist-r2", s)] = _Run(np.asarray(acc_arm) + 0.01 * s, st_arm)
        out[("mnist-r2-control", s)] = _Run(np.asarray(acc_ctl) + 0.02 * s, st_ctl)
    return out


R2 = steps.CONTRASTS[2]


def test_equal_steps_give_the_paired_difference_of_mean_accuracy():
    runs = _runs([0.5, 0.7, 0.9], [0.4, 0.7, 0.95], [25, 100, 100], [25, 100, 100])
    p = steps.pair(runs, "mnist", R2)
    a, b = p.arm, p.control
    assert p.steps == 225  # each side's steps over the run: the table's column
    diff = steps.auc(a) - steps.auc(b)
    want = [np.mean([0.5, 0.7, 0.9]) + 0.01 * s - np.mean([0.4, 0.7, 0.95]) - 0.02 * s for s in range(3)]
    np.testing.assert_allclose(diff, want)
    curves = steps.accuracy_vs_steps(runs, "mnist", ("r2",))
    np.testing.assert_array_equal(curves["r2"][0], [25, 125, 225])


def test_unequal_steps_are_refused():
    runs = _runs([0.5, 0.7], [0.4, 0.7], [25, 100], [100, 100])
    with pytest.raises(GradlabError, match="different optimisation steps"):
        steps.pair(runs, "mnist", R2)


def test_the_figure_draws_every_contrast_of_both_datasets():
    from gradlab.results import figures

    runs = {}
    for d in steps.DATASETS:
        for v in {x for c in (*steps.CONTRASTS, steps.HOMOGENEITY) for x in (c.arm, c.control)}:
            for s in range(2):
                runs[(f"{d}-{v}", s)] = _Run([0.5, 0.8, 0.9], [100, 100, 100])
    png = figures.accuracy_vs_steps(runs)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize("shift, words", [(0.1, "above its control"), (-0.1, "below its control"),
                                          (0.0, "not distinguishable from its control")])
def test_the_reading_follows_the_paired_interval(shift, words):
    runs = {}
    rng = np.random.default_rng(0)
    for v in {x for c in (*steps.CONTRASTS, steps.HOMOGENEITY) for x in (c.arm, c.control)}:
        for s in range(4):
            noise = rng.normal(0, 0.003 if v == "r2" else 0.0)  # the arm's seeds spread a little
            acc = np.array([0.5, 0.8, 0.9]) + (shift + noise if v == "r2" else 0.0)
            runs[(f"mnist-{v}", s)] = _Run(acc, [100, 100, 100])
    line = next(x for x in steps.reading(steps.pairs(runs, "mnist")).splitlines() if x.startswith("- `r2` − `r2-control`"))
    assert line.endswith(f"{words} at 4 seeds."), line
    one = {k: v for k, v in runs.items() if k[1] == 0}
    assert "1 seed: no interval yet" in steps.reading(steps.pairs(one, "mnist"))
