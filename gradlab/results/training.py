"""Segmentation training studies: AGC and the weight mechanism (studies/agc_vs_bn.toml,
studies/weight_mechanism.toml). Every comparison is paired by seed: the same seed gives the same
initialisation and the same data. (The best-minibatch paper's R1/R2 are in ``steps``.)"""
from __future__ import annotations

import numpy as np

from gradlab.results import stats
from gradlab.results.common import by_variant, curve, final
from gradlab.results.markdown import ci, num, table

THRESHOLD = 0.9  # epochs to reach this fraction of the shuffled arm's mean final test accuracy
EQUIVALENCE = 0.01  # mIoU: "essentially identical" final accuracy: the paired difference within +-0.01
EPOCH_MARGIN = 1.0  # epochs: "essentially identical" training rate: epochs to the target within +-1
TOST_ALPHA = 0.05  # per side: TOST at 5% = the 90% interval inside the margin


def epochs_to(acc: np.ndarray, level: float) -> np.ndarray:
    """First epoch (1-based) whose test accuracy reaches ``level``, per seed; NaN when never."""
    hit = acc >= level
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1.0, np.nan)


def weight_rows(wm: dict) -> list[dict]:
    """W1-W3: each weight-mechanism model minus the baseline, final test mIoU, paired by seed; the
    effect "seeds needed" sizes is the paper's gain (Table II)."""
    rows = []
    base = final(by_variant(wm, "baseline"), "test_miou")
    for claim, v, gain, paper in _WM:
        vals = final(by_variant(wm, v), "test_miou") - base
        rows.append({"id": claim, "paper": paper, "data": "synthetic buildings", "metric": v, "phase": "final",
                     "test": f"`{v}` − baseline, test mIoU {'> 0' if gain > 0 else '< 0'}", "sign": int(np.sign(gain)),
                     "values": vals, "ci": stats.interval(vals), "p": stats.t_test_p(vals), "seeds": len(vals),
                     "effect": gain, "decided_by": "t over seeds (paired)"})
    return rows


def agc_rows(wm: dict, agc: dict) -> list[dict]:
    """A1: AGC minus BN at the same learning rate, paired by seed, as equivalence tests (TOST at
    ``TOST_ALPHA`` per side, i.e. the 90% interval inside the margin): final test mIoU within
    ``±EQUIVALENCE`` and the training rate (epochs to ``THRESHOLD`` of BN's mean final mIoU) within
    ``±EPOCH_MARGIN``. Each row's p is the TOST p when the estimate lies inside the margin
    (rejecting: supported), else the one-sided p of lying beyond it (rejecting: contradicted)."""
    rows = []
    for agc_v, bn_runs in (("agc-paper-lr", by_variant(agc, "bn-paper-lr")), ("agc", by_variant(wm, "baseline"))):
        agc_runs = by_variant(agc, agc_v)
        lr = agc_runs[0].config["train"]["lr"]
        if bn_runs[0].config["train"]["lr"] != lr:
            raise ValueError(f"A1 compares BN and AGC at one learning rate: {agc_v} has {lr}")
        bn_curve, agc_curve = curve(bn_runs, "test_miou"), curve(agc_runs, "test_miou")
        level = THRESHOLD * float(bn_curve[:, -1].mean())
        epochs = bn_curve.shape[1]
        to = {k: np.nan_to_num(epochs_to(c, level), nan=epochs + 1.0) for k, c in (("agc", agc_curve),
                                                                                     ("bn", bn_curve))}
        paper = _A1 + ("; BN and AGC at the paper's learning rate, 0.02 × minibatch size)"
                       if abs(lr - 0.02 * _batch_size(agc_runs)) < 1e-9
                       else "; here at BN's own learning rate, not the paper's 0.02 × minibatch size)")
        for what, vals, margin, unit in (
                ("final test mIoU", agc_curve[:, -1] - bn_curve[:, -1], EQUIVALENCE, " mIoU"),
                (f"epochs to test mIoU {num(level)} ({THRESHOLD:g} × BN's final; never: {epochs + 1})",
                 to["agc"] - to["bn"], EPOCH_MARGIN, " epochs")):
            rows.append(_equivalence_row(paper, agc_v, lr, what, vals, margin, unit))
    return rows


def _batch_size(runs: list) -> int:
    return int(runs[0].config["train"]["batch_size"])


def _equivalence_row(paper: str, variant: str, lr: float, what: str, vals: np.ndarray, margin: float,
                     unit: str) -> dict:
    c = stats.interval(vals, 1 - 2 * TOST_ALPHA)
    inside = abs(c[0]) < margin
    p = stats.tost_p(vals, margin) if inside else stats.beyond_p(vals, margin)
    return {"id": "A1", "paper": paper, "data": "synthetic buildings", "metric": variant, "phase": "final",
            "test": f"AGC − BN at lr {lr:g}: {what} within ±{margin:g}{unit}", "sign": 0, "values": vals,
            "ci": stats.interval(vals), "ci90": c, "p": p, "seeds": len(vals),
            "decided_by": (f"TOST, {TOST_ALPHA:g} per side (estimate inside the margin)" if inside
                           else f"one-sided t beyond the margin, {TOST_ALPHA:g} (estimate at or beyond it)"),
            "on_reject": "supported" if inside else "contradicted"}


def segmentation_table(wm: dict, agc: dict) -> str:
    base = final(by_variant(wm, "baseline"), "test_miou")
    bn32 = final(by_variant(agc, "bn-paper-lr"), "test_miou")
    rows = []
    for runs, v, ref, ref_name in ((wm, "baseline", None, ""), (wm, "alpha0.1", base, "baseline"),
                                   (wm, "alpha0.5", base, "baseline"), (wm, "beta0.1", base, "baseline"),
                                   (agc, "agc", base, "baseline (BN, lr 0.05)"), (agc, "bn-paper-lr", None, ""),
                                   (agc, "agc-paper-lr", bn32, "bn-paper-lr")):
        rs = by_variant(runs, v)
        miou = final(rs, "test_miou")
        rows.append([f"`{v}`", f"{rs[0].config['train']['lr']:g}", ci(*stats.interval(final(rs, "test_acc"))),
                     ci(*stats.interval(miou)),
                     "–" if ref is None else f"{ci(*stats.interval(miou - ref))} vs {ref_name}"])
    return table(["model", "lr", "pixel acc.", "mIoU", "mIoU difference (paired)"], rows)


_A1 = ("\"the training rate and accuracy for both techniques are essentially identical\" (section 4, Discussion")
# (claim, variant, the paper's mIoU gain over the baseline in its Table II, whose BN weights start at 1 as
# PyTorch's default BatchNorm init does in gradlab's U-Net (Table I's start from N(0, 1)), its words)
_WM = (("W1", "alpha0.1", 0.0026, "alpha = 0.1 on the series concatenation raises mIoU (0.7820 -> 0.7846, Table II)"),
       ("W2", "alpha0.5", 0.0080, "alpha = 0.5 raises mIoU (0.7820 -> 0.7900, Table II)"),
       ("W3", "beta0.1", -0.0104, "beta = 0.1 on the parallel position lowers mIoU (0.7820 -> 0.7716, Table II)"))
