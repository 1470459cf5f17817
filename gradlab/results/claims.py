"""The papers' claims, one numbered row each, with a verdict computed from the committed runs.

Best-minibatch paper (section 5 and 6), tested on the probe study (``studies/class_mix.toml``):
each claim is a contrast between score bins of a metric's contiguous cut (the paper's batches),
of the batches' D in random units, computed per seed and tested over seeds. Training claims (R1,
R2) compare policies with shuffled training, paired by seed (same initialisation). AGC and weight
mechanism compare final test mIoU, paired by seed. Each family is Holm-corrected.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradlab.registry import RANDOM
from gradlab.report.summary import phase_profile, score_bins
from gradlab.results import stats
from gradlab.results.catalog import CLASS_MIX, DATASET_NAMES
from gradlab.results.common import by_variant
from gradlab.runfile.reader import Run


@dataclass(frozen=True)
class Contrast:
    """Mean D (random units) of the batches in score bins ``a`` minus that of bins ``b``."""
    a: tuple[int, ...]
    b: tuple[int, ...]
    bins: int
    words: str

    def per_seed(self, runs: list[Run], probe: str, phase: int) -> np.ndarray:
        out = []
        for r in runs:
            prof = phase_profile(r, probe, phase, unit=RANDOM)
            b = score_bins(r.batch_scores(probe, r.phase_epochs(phase)), self.bins)
            out.append(prof[np.isin(b, self.a)].mean() - prof[np.isin(b, self.b)].mean())
        return np.array(out)


UPPER = Contrast((3,), (0, 1, 2), 4, "Q4 − Q1..Q3")
EXTREMES = Contrast((0, 3), (1, 2), 4, "Q1,Q4 − Q2,Q3")
OUTER_20 = Contrast((0, 9), tuple(range(1, 9)), 10, "outer 20% − middle 80%")
EARLY, LATER = (0,), (1, 2)


@dataclass(frozen=True)
class ProbeClaim:
    id: str
    paper: str  # what the paper says, quoted or closely paraphrased, with its phase
    metrics: tuple[str, ...]
    phases: tuple[int, ...]
    contrast: Contrast
    sign: int  # -1: the claim says the contrast is negative (bins a closer); +1: positive (farther)


PROBE_CLAIMS = (
    ProbeClaim("C1", "intensity: \"the best results during the first training phase come from mini-batches in the "
               "upper quartile\" (phase 1)", ("intensity",), EARLY, UPPER, -1),
    ProbeClaim("C2", "intensity: extremes far later, \"for later training phases ... intermediate intensities\" "
               "(phases 2-3)", ("intensity",), LATER, EXTREMES, +1),
    ProbeClaim("C3", "HSV: best batches \"from the outside the middle 80 percent\" in the first phase", ("hsv",),
               EARLY, OUTER_20, -1),
    ProbeClaim("C3", "HSV: extremes \"produce poor mini-batches after the first training phase\"", ("hsv",), LATER,
               EXTREMES, +1),
    ProbeClaim("C4", "edges: best batches \"inside the middle 80 percent\" in the first phase", ("edges",), EARLY,
               OUTER_20, +1),
    ProbeClaim("C5", "LPIPS: best batches in the upper quartile in the first phase", ("lpips",), EARLY, UPPER, -1),
    ProbeClaim("C6", "all metrics: \"the metric extremes produce poor mini-batches after the first training phase\"",
               ("intensity", "hsv", "edges", "lpips"), LATER, EXTREMES, +1),
)


def probe_claim_rows(runs: dict) -> list[dict]:
    """One row per (claim, dataset, metric, phase): the contrast per seed, its interval, the same
    contrast on the class-balanced cut, the t-test p over seeds and (after ``finish``) the verdict."""
    rows = []
    for c in PROBE_CLAIMS:
        for v in CLASS_MIX.variants:
            rs = by_variant(runs, v)
            for m in c.metrics:
                for ph in c.phases:
                    vals = c.contrast.per_seed(rs, m, ph)
                    rows.append({"id": c.id, "paper": c.paper, "data": DATASET_NAMES[v], "metric": m, "phase": ph,
                                 "test": f"{c.contrast.words} of `{m}` {'< 0' if c.sign < 0 else '> 0'}",
                                 "sign": c.sign, "values": vals, "ci": stats.interval(vals),
                                 "class_ci": stats.interval(c.contrast.per_seed(rs, m + "@class", ph)),
                                 "p": stats.t_test_p(vals), "seeds": len(rs)})
    return finish(rows)


def finish(rows: list[dict], effect_key: str | None = None) -> list[dict]:
    """Holm-adjust the family's p-values, and add each row's verdict and, where it is not resolved,
    the seeds a test at the strictest Holm level (alpha / m) would need for the measured (or the
    paper's) effect. Rows that repeat a test (C6 repeats C2's and C3's later-phase rows) count once."""
    key = [(r["data"], r["metric"], r["phase"], r["test"]) for r in rows]
    unique = list(dict.fromkeys(key))
    first = {k: next(r for r, kk in zip(rows, key) if kk == k) for k in unique}
    adj = dict(zip(unique, stats.holm([first[k]["p"] for k in unique])))
    m = int(np.isfinite([first[k]["p"] for k in unique]).sum())
    for r, k in zip(rows, key):
        r["p_holm"], r["m"] = float(adj[k]), m
        r["verdict"] = r.get("verdict") or stats.verdict(float(adj[k]), r["ci"][0], r["sign"])
        effect = r.get(effect_key) if effect_key else None
        r["needed"] = (None if r["verdict"] != "not resolvable"
                       else stats.seeds_needed(r["values"], effect, alpha=stats.ALPHA / max(m, 1)))
    return rows
