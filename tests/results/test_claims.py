"""The claims page's tests are what they say (issues 28 and 31): symmetric tails by images, colour
metrics untestable on greyscale data and out of the family, distinct tests counted once, A1 as a
labelled equivalence test in its own family, the weight mechanism's gains from its Table II."""
from __future__ import annotations

import re

import numpy as np
import torch
import pytest

from gradlab.registry import DATASETS, GREYSCALE
from gradlab.results import claims, training
from gradlab.results import repo_root
from gradlab.results.catalog import CONVERGENCE
from gradlab.results.common import by_variant, open_study


@pytest.mark.parametrize("k", [10, 16, 20, 32, 64])
def test_outer_20_is_symmetric_by_images(k):
    """The lowest and the highest 10% of the images: as many batches at each end (16 batches: 2 + 2,
    never 2 lowest + 1 highest), and a batch's images' midpoint decides where it is."""
    rng = np.random.default_rng(k)
    scores = rng.uniform(size=k)
    a, b = claims.OUTER_20.groups(scores)
    rank = np.argsort(np.argsort(scores))
    low, high = a & (rank < k / 2), a & (rank >= k / 2)
    assert low.sum() == high.sum() >= 1 and not (a & b).any() and (a | b).all()
    q = (rank + 0.5) / k
    assert (a == ((q < 0.1) | (q >= 0.9))).all()
    assert claims.OUTER_20.share(16) == "4 of 16 batches (25% of the images) vs 12"


def test_quartile_contrasts_cut_equal_shares():
    a, b = claims.UPPER.groups(np.arange(16.0))
    assert a.sum() == 4 and a[12:].all()
    a, b = claims.EXTREMES.groups(np.arange(16.0))
    assert a.sum() == 8 and a[:4].all() and a[12:].all()


def _row(data, metric, p, verdict=None):
    r = {"data": data, "metric": metric, "phase": 1, "test": "t", "p": p, "ci": (1.0, 0.5, 1.5), "sign": 1,
         "values": np.array([1.0, 1.1, 0.9])}
    return r | ({"verdict": verdict} if verdict else {})


def test_a_test_two_claims_share_counts_once_and_untestable_rows_not_at_all():
    rows = claims.finish([_row("A", "x", 0.02), _row("A", "x", 0.02), _row("A", "y", 0.03),
                          _row("B", "hsv", np.nan, claims.NOT_TESTABLE)])
    assert {r["m"] for r in rows} == {2}
    assert [r["p_holm"] for r in rows[:3]] == pytest.approx([0.04, 0.04, 0.04])
    assert rows[3]["verdict"] == claims.NOT_TESTABLE


def test_equivalence_rows_name_their_verdict_on_rejection():
    x = np.array([0.001, -0.002, 0.0005, 0.0015, -0.001])
    inside = training._equivalence_row("q", "agc", 0.05, "final test mIoU", x, 0.01, " mIoU")
    outside = training._equivalence_row("q", "agc-paper-lr", 0.32, "final test mIoU", x - 0.05, 0.01, " mIoU")
    rows = claims.finish([inside, outside])
    assert [r["verdict"] for r in rows] == ["supported", "contradicted"] and rows[0]["m"] == 2
    assert "TOST" in rows[0]["decided_by"] and rows[0]["needed"] is None


def test_weight_mechanism_gains_are_table_ii_differences():
    for _, _, gain, words in training._WM:
        base, model = map(float, re.search(r"\((\d\.\d+) -> (\d\.\d+), Table II\)", words).groups())
        assert gain == pytest.approx(model - base, abs=1e-12)


def test_hsv_on_greyscale_images_sorts_as_intensity():
    """The fact behind the greyscale trait: on grey images (one value repeated in 3 channels) hue and
    saturation are 0, so hsv's batch order is intensity's, and an HSV claim there is no colour test."""
    from gradlab.metrics import get_metric
    from gradlab.metrics.base import score_images

    grey = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0)).expand(64, 3, 16, 16)
    hsv, intensity = get_metric("hsv"), get_metric("intensity")
    a = hsv.primary(score_images(hsv, grey.clone()))
    b = intensity.primary(score_images(intensity, grey.clone()))
    assert np.array_equal(np.argsort(a, kind="stable"), np.argsort(b, kind="stable"))


def test_hsv_claims_on_the_committed_greyscale_study_are_not_testable_and_out_of_the_family():
    runs = open_study(CONVERGENCE, repo_root())
    for v in CONVERGENCE.variants:
        rs = by_variant(runs, v)
        assert claims.colourless(rs, "hsv") and rs[0].config["data"]["dataset"] in DATASETS.having(GREYSCALE)
    rows = claims.probe_claim_rows(runs, CONVERGENCE.variants)
    untestable = [r for r in rows if r["verdict"] == claims.NOT_TESTABLE]
    assert untestable and all(r["metric"] == "hsv" and r["p"] != r["p"] for r in untestable)
    distinct = {(r["data"], r["metric"], r["phase"], r["test"]) for r in rows if r["verdict"] != claims.NOT_TESTABLE}
    assert {r["m"] for r in rows} == {len(distinct)}
    for r in runs.values():
        r.close()


def test_claims_on_the_common_target_stand_beside_the_own_partition_verdict(tmp_path, fake_run, monkeypatch):
    """D to the common target = 1.5 x the own-partition D for `intensity`: the same contrast, 1.5 times
    as large per seed, tested the same way and Holm-corrected as a family of its own."""
    prof = {"intensity": {0: np.linspace(0.6, 1.4, 16), 1: np.linspace(1.4, 0.6, 16)}}
    runs = {("mnist", s): None for s in range(3)}
    from gradlab.runfile.reader import Run

    for s in range(3):
        path = fake_run(tmp_path / f"r{s}.h5", batches=16, seed=s, profiles=prof, common={"intensity": 1.5},
                        probes=("intensity", "intensity@class", "random"))
        runs[("mnist", s)] = Run(path)
    c = claims.PROBE_CLAIMS[0]  # C1: Q4 - Q1..Q3 of intensity in phase 0
    row = claims.probe_row(c, list(runs.values()), "mnist", "intensity", 0)
    np.testing.assert_allclose(row["common"]["values"], 1.5 * row["values"], rtol=1e-12)
    balanced = c.contrast.per_seed(list(runs.values()), "intensity@class", 0)  # the class-balanced cut's test
    np.testing.assert_allclose(row["class"]["values"], balanced, rtol=1e-12)
    assert 0 < row["class"]["p"] <= 1 and not np.allclose(balanced, row["values"])
    monkeypatch.setattr(claims, "PROBE_CLAIMS", claims.PROBE_CLAIMS[:2])  # the intensity claims: C1, C2
    rows = claims.probe_claim_rows(runs, ("mnist",))
    assert len(rows) == 3 and {r["common"]["m"] for r in rows} == {r["m"] for r in rows} == {2}  # phase 2: no epoch
    mine = [r for r in rows if r["metric"] == "intensity" and r["id"] == "C1"]
    assert mine and all(r["common"]["m"] >= 1 and r["common"]["verdict"] for r in mine)
    without = {k: Run(fake_run(tmp_path / f"n{k[1]}.h5", batches=16, seed=k[1], profiles=prof,
                                probes=("intensity", "intensity@class", "random"))) for k in runs}
    assert "common" not in claims.probe_row(c, list(without.values()), "mnist", "intensity", 0)
    for r in (*runs.values(), *without.values()):
        r.close()


def test_phase_0_is_also_given_without_theta_0(tmp_path, fake_run):
    """Epoch 0's D is at the untrained initialisation: phase-0 rows also give the contrast over the
    phase's later epochs, equal to the same contrast computed by hand on those epochs."""
    from gradlab.report.units import in_random_units
    from gradlab.runfile.reader import Run

    prof = {"intensity": {0: np.linspace(0.6, 1.4, 16)}}
    rs = [Run(fake_run(tmp_path / f"r{s}.h5", batches=16, seed=s, profiles=prof,
                       probes=("intensity", "intensity@class", "random"))) for s in range(3)]
    row = claims.probe_row(claims.PROBE_CLAIMS[0], rs, "mnist", "intensity", 0)
    want = []
    for r in rs:
        rel = in_random_units(r, "intensity", "l2", control="random")[1:3].mean(axis=0)  # phase 0: epochs 0-2
        a, b = claims.UPPER.groups(r.batch_scores("intensity", r.phase_epochs(0)))
        want.append(rel[a].mean() - rel[b].mean())
    np.testing.assert_allclose(row["no_init"]["ci"][0], np.mean(want), rtol=1e-12)
    np.testing.assert_allclose(row["no_init"]["values"], want, rtol=1e-12)  # and tested on those epochs alone
    assert 0 < row["no_init"]["p"] <= 1 and not np.allclose(row["no_init"]["values"], row["values"])
    later = claims.probe_row(claims.PROBE_CLAIMS[1], rs, "mnist", "intensity", 1)
    assert "no_init" not in later
    for r in rs:
        r.close()


def test_the_reading_lists_contradicted_rows_and_target_disagreements():
    from gradlab.results import pages

    base = {"paper": "the paper's words", "data": "MNIST", "metric": "lpips", "phase": 0, "test": "Q4 < 0",
            "ci": (1.2, 1.0, 1.4), "p_holm": 0.001}
    same = {"verdict": "supported", "ci": (1, 0.5, 2)}
    rows = [{**base, "id": "C5", "verdict": "contradicted", "common": {"verdict": "contradicted", "ci": (1, 0, 2)},
             "class": {"verdict": "contradicted", "ci": (1, 0, 2)}},
            {**base, "id": "C1", "verdict": "supported", "common": {"verdict": "not resolvable", "ci": (1, -1, 3)},
             "class": same},
            {**base, "id": "C2", "verdict": "supported", "common": same, "class": {"verdict": "contradicted",
                                                                                    "ci": (-1, -2, -0.5)}},
            {**base, "id": "C4", "verdict": "supported", "common": same, "class": same}]
    text = pages._reading(rows)
    assert "**C5, MNIST, phase 0**: the paper says the paper's words" in text and "opposite sign" in text
    assert "C1, MNIST, phase 0, `lpips`: supported on the paper's batches and D, not resolvable on D to the common" \
        in text
    assert "C2, MNIST, phase 0, `lpips`: supported on the paper's batches and D, contradicted on the class-balanced" \
        in text
    assert "C4" not in text
    assert pages._reading(rows[3:]).startswith("No row contradicts the paper, and every row has its verdict on the "
                                               "class-balanced cut and on D to the common target too")
