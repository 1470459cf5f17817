"""Training interventions at equal optimisation steps (studies/training.toml).

Each intervention is compared with a control that differs from it in one thing and takes the same
optimisation steps on the same number of images (``gradlab.train.policy``): R1 against as many
batches (or images) dropped at random, R2 against a random quarter, ``class`` against ``shuffle``.
The comparison is paired by seed (same initialisation, same data generator). It refuses a pair whose
recorded steps (``/train/steps``) differ in any epoch, so a contrast at unequal steps cannot reach a
page. The measure of "faster convergence" is the mean test accuracy over the epochs (the area under
the accuracy curve; with equal steps per epoch it is the area against steps too), beside the final
accuracy; the figure plots test accuracy against cumulative steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradlab.errors import GradlabError
from gradlab.results import stats
from gradlab.results.catalog import DATASET_NAMES
from gradlab.results.common import by_variant, curve
from gradlab.results.markdown import ci, interval_words, table

DATASETS = ("mnist", "fashion")


@dataclass(frozen=True)
class Contrast:
    claim: str  # the claims page's id
    arm: str  # variant suffix after "<dataset>-"
    control: str
    what: str  # what the arm does, in a few words
    paper: str  # the claim's words and where they stand
    panel: str  # its panel's title in the accuracy-against-steps figure


_R1 = ("\"slightly faster convergence by removing minibatches with extremely low or high intensities\" "
       "(section 5, Conclusions, conclusion 1)")
_R2 = ("\"slightly faster convergence by only considering mini-batches with high intensity images ... during the "
       "first training phase\" (section 5, Conclusions, conclusion 2)")
_G1 = ("gradlab's own finding, not the paper's: class-stratified random batches are closer to the full gradient "
       "than random ones (class-mix page); does training on them converge faster?")
CONTRASTS = (
    Contrast("R1", "r1-batches", "r1-batches-control", "sorted batches less the outer 10% by mean intensity at "
             "each end, against as many sorted batches dropped at random", _R1, "R1"),
    Contrast("R1", "r1-images", "r1-images-control", "shuffled batches of the middle 80% of images by intensity, "
             "against 80% of the images at random", _R1, "R1"),
    Contrast("R2", "r2", "r2-control", "phase 0 on the upper-quartile images by intensity, against a random "
             "quarter; every image afterwards", _R2, "R2"),
    Contrast("G1", "class", "shuffle", "class-stratified random batches, redrawn every epoch, against random "
             "batches", _G1, "G1"),
)
# what the sorted batches alone cost, against shuffled training: not a claim, the context of the R1 batch arms
HOMOGENEITY = Contrast("–", "batches", "shuffle", "every intensity-sorted batch, random visiting order, against "
                       "random batches", "", "sorting alone")


def auc(acc: np.ndarray) -> np.ndarray:
    """Mean test accuracy over the epochs, per seed (``acc``: ``[S, E]``)."""
    return acc.mean(axis=1)


def steps(runs: list) -> np.ndarray:
    """``[S, E]``: optimizer steps of every epoch, per seed (``/train/steps``)."""
    return curve(runs, "train_steps")


@dataclass(frozen=True)
class Pair:
    """One contrast on one dataset, arm and control checked to take the same steps in every epoch."""

    contrast: Contrast
    arm: np.ndarray  # [S, E] the arm's test accuracy after every epoch, per seed
    control: np.ndarray  # [S, E] the control's, the same seeds in the same order
    steps: int  # optimisation steps of each side over the whole run

    @property
    def difference(self) -> np.ndarray:
        """``[S]``: arm minus control, mean test accuracy over epochs, per seed."""
        return auc(self.arm) - auc(self.control)


def pair(runs: dict, dataset: str, c: Contrast) -> Pair:
    """Arm and control of ``c`` on ``dataset``, after checking that both took the same steps in every
    epoch of every seed (one ``GradlabError`` naming the first difference otherwise)."""
    arm, ctl = by_variant(runs, f"{dataset}-{c.arm}"), by_variant(runs, f"{dataset}-{c.control}")
    sa, sc = steps(arm), steps(ctl)
    if sa.shape != sc.shape or not np.array_equal(sa, sc):
        raise GradlabError(f"results: {dataset}-{c.arm} and {dataset}-{c.control} took different optimisation "
                           f"steps ({sa.sum(axis=1).tolist()} against {sc.sum(axis=1).tolist()} per seed); a "
                           f"contrast is made only at equal steps")
    return Pair(c, curve(arm, "test_acc"), curve(ctl, "test_acc"), int(sa[0].sum()))


def pairs(runs: dict, dataset: str) -> list[Pair]:
    """Every contrast of one dataset, the claims' and sorting alone (``HOMOGENEITY``): what the training
    page's table and its reading both read."""
    return [pair(runs, dataset, c) for c in (*CONTRASTS, HOMOGENEITY)]


def rows(runs: dict) -> list[dict]:
    """One claims row per contrast and dataset: arm minus control, mean test accuracy over epochs > 0."""
    out = []
    for c in CONTRASTS:
        for d in DATASETS:
            vals = pair(runs, d, c).difference
            out.append({"id": c.claim, "paper": c.paper, "data": DATASET_NAMES[d], "metric": "intensity"
                        if c.claim != "G1" else "class", "phase": "all",
                        "test": f"`{c.arm}` − `{c.control}` at equal steps: mean test accuracy over epochs > 0",
                        "sign": +1, "values": vals, "ci": stats.interval(vals), "p": stats.t_test_p(vals),
                        "seeds": len(vals)})
    return out


def contrast_table(ps: list[Pair]) -> str:
    """Every contrast of one dataset (``pairs``): steps, each side's mean and final accuracy, the paired
    difference."""
    body = [[p.contrast.claim, f"`{p.contrast.arm}` − `{p.contrast.control}`", p.contrast.what, f"{p.steps:,}",
             ci(*stats.interval(auc(p.arm))), ci(*stats.interval(auc(p.control))),
             ci(*stats.interval(p.difference)), ci(*stats.interval(p.arm[:, -1] - p.control[:, -1]))] for p in ps]
    return table(["claim", "contrast", "arm", "steps (each side)", "arm: mean test acc. over epochs",
                  "control: same", "difference (paired)", "final test acc. difference (paired)"], body)


def reading(ps: list[Pair]) -> str:
    """One generated line per contrast of one dataset (``pairs``), read from its paired interval (no
    correction; the claims page gives the Holm-corrected verdict of the claims' rows)."""
    lines = []
    for p in ps:
        n, x = len(p.arm), stats.interval(p.difference)
        words = interval_words(x, *(f"{w} its control at {n} seeds" for w in ("above", "below",
                                                                            "not distinguishable from")),
                               f"{n} seed: no interval yet")
        lines.append(f"- `{p.contrast.arm}` − `{p.contrast.control}`: mean test accuracy over epochs {ci(*x)}, "
                     f"{words}.")
    return "\n".join(lines) + "\n"


def accuracy_vs_steps(runs: dict, dataset: str, variants: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """variant -> (cumulative steps after each epoch ``[E]``, mean test accuracy over seeds ``[E]``): the
    data of the accuracy-against-steps figure (every seed of a variant takes the same steps)."""
    out = {}
    for v in variants:
        rs = by_variant(runs, f"{dataset}-{v}")
        st = steps(rs)
        if not (st == st[0]).all():
            raise GradlabError(f"results: the seeds of {dataset}-{v} took different steps per epoch")
        out[v] = (np.cumsum(st[0]), curve(rs, "test_acc").mean(axis=0))
    return out
