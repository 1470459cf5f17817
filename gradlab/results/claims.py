"""The papers' claims, one numbered row each, with a verdict computed from the committed runs.

Best-minibatch paper (sections 4 and 5), tested on the convergence study (``studies/convergence.toml``):
each claim is a contrast between groups of a metric's contiguous cut (the paper's batches),
grouped by where each batch's mean score sits among the images' scores, of the batches' D in
random units. Where the batches are the same images in every seed (a fixed order), the batch is
the unit of replication and a permutation of the batches shared by every seed decides the row
(``stats.batch_permutation_p``); the t-test over seeds stands beside it. Where the batches differ
between seeds, the t-test over seeds decides. A colour metric on greyscale data is not testable
(hue and saturation are 0: its order is intensity's) and stays out of the family. Training claims
(``gradlab.results.steps``) compare each policy with its control at equal steps, paired by seed. Each
family is Holm-corrected over its distinct tests (a test two claims share counts once).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradlab.registry import COLOUR, DATASETS, GREYSCALE, METRICS, RANDOM
from gradlab.report.summary import phase_profile, shared_composition
from gradlab.results import stats
from gradlab.results.catalog import DATASET_NAMES
from gradlab.results.common import by_variant
from gradlab.runfile.reader import Run

T_OVER_SEEDS = "t over seeds"
NOT_TESTABLE = "not testable here (no colour)"
# The same contrast, tested beside the verdict, each a Holm family of its own: in phase 0 without theta_0
# (epoch 0, the untrained initialisation), on the metric's class-balanced cut (``m@class``), and on D to
# the common target (the random probe's full gradient)
SIDE_TESTS = ("no_init", "class", "common")


def image_quantile(scores: np.ndarray) -> np.ndarray:
    """Where each of K equal batches sits among the images, by its mean score: the midpoint
    (rank + 0.5) / K of the images its rank covers (0 = lowest scores, 1 = highest)."""
    k = len(scores)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(scores, kind="stable")] = np.arange(k)
    return (rank + 0.5) / k


@dataclass(frozen=True)
class Contrast:
    """Mean D (random units) of the batches in image-quantile ranges ``a`` minus that of ``b``;
    a batch belongs to a range [lo, hi) when its ``image_quantile`` lies in it, so a tail is the
    same share of the images at either end ("outer 20%": the lowest and the highest 10%)."""
    a: tuple[tuple[float, float], ...]
    b: tuple[tuple[float, float], ...]
    words: str

    def groups(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = image_quantile(scores)

        def inside(ranges: tuple[tuple[float, float], ...]) -> np.ndarray:
            return np.any([(lo <= q) & (q < hi) for lo, hi in ranges], axis=0)
        return inside(self.a), inside(self.b)

    def share(self, k: int) -> str:
        """How many of ``k`` batches each group holds, e.g. ``4 of 16 (25%) vs 12``."""
        a, b = self.groups(np.arange(k, dtype=np.float64))
        return f"{int(a.sum())} of {k} batches ({100 * a.sum() / k:.0f}% of the images) vs {int(b.sum())}"

    def profiles(self, runs: list[Run], probe: str, phase: int, target: str = "own", skip_init: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``[S, K]`` phase profiles in random units and each seed's groups (by its own scores).
        ``target="common"``: D to the common target (the random probe's full gradient), in the same
        unit (random's mean D, which is its own and its common-target D alike)."""
        prof = np.stack([phase_profile(r, probe, phase, unit=RANDOM, skip_init=skip_init,
                                       matrix=None if target == "own" else r.distance_matrix(probe, "l2", target))
                         for r in runs])
        groups = [self.groups(r.batch_scores(probe, r.phase_epochs(phase))) for r in runs]
        return prof, np.stack([g[0] for g in groups]), np.stack([g[1] for g in groups])

    def per_seed(self, runs: list[Run], probe: str, phase: int, skip_init: bool = False) -> np.ndarray:
        return differences(*self.profiles(runs, probe, phase, skip_init=skip_init))


def differences(prof: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[S]``: each seed's mean of its profile over group ``a`` minus that over group ``b``."""
    return np.array([p[ai].mean() - p[bi].mean() for p, ai, bi in zip(prof, a, b)])


UPPER = Contrast(((0.75, 1.0),), ((0.0, 0.75),), "Q4 − Q1..Q3")
EXTREMES = Contrast(((0.0, 0.25), (0.75, 1.0)), ((0.25, 0.75),), "Q1,Q4 − Q2,Q3")
OUTER_20 = Contrast(((0.0, 0.1), (0.9, 1.0)), ((0.1, 0.9),), "outer 20% − middle 80%")
EARLY, LATER = (0,), (1, 2)


@dataclass(frozen=True)
class ProbeClaim:
    id: str
    paper: str  # what the paper says, quoted or closely paraphrased, with its phase and section
    metrics: tuple[str, ...]
    phases: tuple[int, ...]
    contrast: Contrast
    sign: int  # -1: the claim says the contrast is negative (bins a closer); +1: positive (farther)


_CONCL = "section 5, Conclusions"
PROBE_CLAIMS = (
    ProbeClaim("C1", "intensity: \"the best results during the first training phase come from mini-batches in the "
               f"upper quartile\" (first phase; {_CONCL})", ("intensity",), EARLY, UPPER, -1),
    ProbeClaim("C2", "intensity: extremes far later, \"for later training phases ... intermediate intensities\" "
               "(later phases; section 4, Experiments and Results)", ("intensity",), LATER, EXTREMES, +1),
    ProbeClaim("C3", "HSV: best batches \"from the outside the middle 80 percent\" in the first phase "
               f"({_CONCL})", ("hsv",), EARLY, OUTER_20, -1),
    ProbeClaim("C3", "HSV: extremes \"produce poor mini-batches after the first training phase\" "
               f"({_CONCL})", ("hsv",), LATER, EXTREMES, +1),
    ProbeClaim("C4", "edges: best batches \"inside the middle 80 percent\" in the first phase "
               f"({_CONCL})", ("edges",), EARLY, OUTER_20, +1),
    ProbeClaim("C5", f"LPIPS: best batches in the upper quartile in the first phase ({_CONCL})", ("lpips",), EARLY,
               UPPER, -1),
    ProbeClaim("C6", "all metrics: \"the metric extremes produce poor mini-batches after the first training phase\" "
               f"({_CONCL})", ("intensity", "hsv", "edges", "lpips"), LATER, EXTREMES, +1),
)


def colourless(runs: list[Run], metric: str) -> bool:
    """A colour metric on greyscale data: hue and saturation are 0, so it sorts as intensity does."""
    dataset = runs[0].config.get("data", {}).get("dataset")
    return (metric in METRICS.having(COLOUR)) and dataset in DATASETS.having(GREYSCALE)


def probe_row(c: ProbeClaim, rs: list[Run], variant: str, m: str, ph: int) -> dict:
    """One (claim, dataset, metric, phase) row: the contrast per seed and its interval, the same on
    the class-balanced cut, the p that decides and the t-test over seeds beside it."""
    row = {"id": c.id, "paper": c.paper, "data": DATASET_NAMES.get(variant, variant), "metric": m, "phase": ph,
           "test": f"{c.contrast.words} of `{m}` {'< 0' if c.sign < 0 else '> 0'}", "sign": c.sign,
           "seeds": len(rs)}
    if colourless(rs, m):  # before reading the probe: a greyscale study need not run it
        nan = np.full(len(rs), math.nan)
        return row | {"values": nan, "ci": stats.interval(nan), "p": math.nan,
                      "p_t": math.nan, "decided_by": "–", "verdict": NOT_TESTABLE}
    k = rs[0].num_batches(m)
    row |= {"share": c.contrast.share(k), "batches": k}
    shared = shared_composition(rs, m)
    vals, p, p_t = _contrast_test(c, rs, m, ph, shared, "own")
    if ph == 0 and all(len(r.phase_epochs(0)) > 1 for r in rs):  # phase 0 without theta_0, the initialisation
        nv, np_, _ = _contrast_test(c, rs, m, 0, shared, "own", skip_init=True)
        row["no_init"] = {"values": nv, "ci": stats.interval(nv), "p": np_}
    if all(has_common_target(r, m) for r in rs):
        cv, cp, _ = _contrast_test(c, rs, m, ph, shared, "common")
        row["common"] = {"values": cv, "ci": stats.interval(cv), "p": cp}
    balanced = m + "@class"  # the same contrast on the class-balanced cut: what is left without class mix
    bv, bp, _ = _contrast_test(c, rs, balanced, ph, shared_composition(rs, balanced), "own")
    row["class"] = {"values": bv, "ci": stats.interval(bv), "p": bp}
    return row | {"values": vals, "ci": stats.interval(vals), "p": p, "p_t": p_t,
                  "decided_by": f"permutation of the {k} batches shared by every seed" if shared else T_OVER_SEEDS}


def has_common_target(run: Run, probe: str) -> bool:
    """Whether the run recorded ``probe``'s D to the common target (``common_distance_l2``)."""
    try:
        run.distance_matrix(probe, "l2", "common")
    except KeyError:
        return False
    return True


def _contrast_test(c: ProbeClaim, rs: list[Run], m: str, ph: int, shared: bool, target: str,
                   skip_init: bool = False) -> tuple[np.ndarray, float, float]:
    """Per-seed contrast values, the deciding p (batch permutation when every seed has the same
    batches, else the t-test over seeds) and the t-test's p, on D to ``target`` (``skip_init``:
    the phase without epoch 0, theta_0)."""
    prof, a, b = c.contrast.profiles(rs, m, ph, target, skip_init=skip_init)
    vals = differences(prof, a, b)
    p_t = stats.t_test_p(vals)
    return vals, (stats.batch_permutation_p(prof, a, b) if shared else p_t), p_t


def probe_claim_rows(runs: dict, variants: tuple[str, ...]) -> list[dict]:
    """Every probe claim's rows on every variant of the probe study, Holm-corrected as one family.
    Each row also carries the same test on the class-balanced cut (``row["class"]``) and, where the
    runs recorded it, on D to the common target (``row["common"]``), each Holm-corrected as a family
    of its own: the own-partition D of the contiguous cut (the paper's) decides the verdict, the
    others stand beside it."""
    rows = []
    for c in PROBE_CLAIMS:
        for v in variants:
            rs = by_variant(runs, v)
            rows += [probe_row(c, rs, v, m, ph) for m in c.metrics for ph in c.phases]
    finish(rows)
    for key in SIDE_TESTS:
        side = [r for r in rows if key in r]
        if side:
            shadow = finish([{**r, **r[key], "verdict": None} for r in side])
            for r, s in zip(side, shadow):
                r[key].update(p_holm=s["p_holm"], m=s["m"], verdict=s["verdict"])
    return rows


def finish(rows: list[dict], effect_key: str | None = None) -> list[dict]:
    """Holm-adjust the family's p-values over its distinct tests (rows that repeat a test, as C6
    repeats C2's and C3's later-phase rows, count once; rows without a p count not at all), and
    add each row's verdict and, where it is not resolved and the seeds are the unit, the seeds a
    test at the strictest Holm level (alpha / m) would need for the measured (or the paper's)
    effect, with the range the interval of the spread implies."""
    key = [(r["data"], r["metric"], r["phase"], r["test"]) for r in rows]
    unique = list(dict.fromkeys(key))
    first = {k: next(r for r, kk in zip(rows, key) if kk == k) for k in unique}
    adj = dict(zip(unique, stats.holm([first[k]["p"] for k in unique])))
    m = int(np.isfinite([first[k]["p"] for k in unique]).sum())
    for r, k in zip(rows, key):
        r["p_holm"], r["m"] = float(adj[k]), m
        r["verdict"] = r.get("verdict") or _verdict(r, float(adj[k]))
        effect = r.get(effect_key) if effect_key else None
        seed_unit = r.get("decided_by", T_OVER_SEEDS).startswith(T_OVER_SEEDS)
        r["needed"] = (stats.seeds_needed_range(r["values"], effect, alpha=stats.ALPHA / max(m, 1))
                       if r["verdict"] == "not resolvable" and seed_unit else None)
    return rows


def _verdict(row: dict, p_adj: float) -> str:
    """An equivalence row names its verdict on rejection (``on_reject``); a directional row's
    follows the estimate's sign against the claim's."""
    if "on_reject" in row:
        return row["on_reject"] if stats.rejects(p_adj) else "not resolvable"
    return stats.verdict(p_adj, row["ci"][0], row["sign"])
