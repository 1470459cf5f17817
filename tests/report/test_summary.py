"""Phase summary: the best score quantile per phase, checked on runs whose answer is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradlab import open_run
from gradlab.report.summary import phase_summary, score_bins

K = 20  # batches: quartiles of 5


def _known(tmp_path, fake_run, **kw):
    top = np.where(np.arange(K) >= 15, 0.7, 1.0)                            # phase 0: Q4 closest
    middle = np.where((np.arange(K) >= 5) & (np.arange(K) < 10), 0.75, 1.0)  # phase 1: Q2 closest
    flat = np.ones(K)
    return fake_run(tmp_path / "known.h5", epochs=6, milestones=(3,), batches=K,
                    profiles={"intensity": {0: top, 1: middle}, "random": {0: flat, 1: flat}}, **kw)


def test_known_best_quantile_per_phase(tmp_path, fake_run):
    with open_run(_known(tmp_path, fake_run)) as run:
        s = phase_summary(run, bins=4, n_perm=500)
    assert s.probe.tolist() == ["intensity", "intensity"] and s.phase.tolist() == [0, 1]
    p0, p1 = s.iloc[0], s.iloc[1]
    assert p0.best_bin == 4 and p0.best_label == "Q4 (highest 25%)"
    assert p1.best_bin == 2 and p1.best_label == "Q2 (25–50th percentile)"
    # in random units (the flat control's mean D): the planted multiplier itself
    assert (p0.unit, p1.unit) == ("random", "random")
    assert p0.best_rel == pytest.approx(0.7, rel=0.02) and p1.best_rel == pytest.approx(0.75, rel=0.02)
    # the within-order view: 0.7 / mean(profile) with mean = (15 + 5 * 0.7) / 20
    assert p0.own_best_rel == pytest.approx(0.7 / 0.925, rel=0.02)
    assert p1.own_best_rel == pytest.approx(0.75 / 0.9375, rel=0.02)
    assert p0.gain == pytest.approx(1 - p0.best_rel)
    assert p0.verdict == p1.verdict == "beats chance" and p0.p_value < 0.01 and p1.p_value < 0.01
    assert p0.chance_best_rel > p0.best_rel + 0.1  # random binning does not find the planted effect
    # the random control is flat up to 1 % noise: small spread, best bin close to 1
    assert p0.control_spread < 0.03 and p0.control_best_rel > 0.98
    assert p0.outer_rel < p0.middle_rel and p1.outer_rel > p1.middle_rel  # extremes good in 0, bad in 1
    assert p0.epochs == "0–2" and p1.epochs == "3–5" and p1.lr == pytest.approx(0.01)
    lo, hi = p0.best_scores
    with open_run(tmp_path / "known.h5") as run:
        assert (lo, hi) == (run.batch_scores("intensity")[15], run.batch_scores("intensity")[19])


def test_bin_means_match_a_pandas_reference(tmp_path, fake_run):
    rng = np.random.default_rng(3)
    prof = {"intensity": {0: rng.uniform(0.5, 1.5, K), 1: rng.uniform(0.5, 1.5, K)}}
    path = fake_run(tmp_path / "r.h5", epochs=5, milestones=(2,), batches=K, profiles=prof)
    with open_run(path) as run:
        s = phase_summary(run, bins=10, n_perm=0)
        d = run.distances("intensity")
        ctrl = run.distances("random")
    d["rel"] = d.distance / d.epoch.map(ctrl.groupby("epoch").distance.mean())  # the random control's epoch mean
    d["bin"] = d.groupby("epoch").batch_score.rank(method="first").sub(1).mul(10).floordiv(K).astype(int)
    ref = d.groupby(["phase", "batch"]).agg(rel=("rel", "mean"), bin=("bin", "first")).reset_index()
    ref = ref.groupby(["phase", "bin"]).rel.mean().unstack()
    got = s.set_index("phase")[[f"bin_{i + 1}" for i in range(10)]].to_numpy()
    np.testing.assert_allclose(got, ref.to_numpy(), rtol=1e-12)
    assert (s.best_bin == ref.to_numpy().argmin(axis=1) + 1).all()
    assert s.best_label.str.match(r"D\d+").all() and s.p_value.isna().all() and (s.verdict == "no test").all()


def test_no_signal_is_within_chance(tmp_path, fake_run):
    """Flat profiles (1 % noise): p is roughly uniform, so "beats chance" is rare and mostly "within chance"."""
    ps = []
    for seed in range(12):
        path = fake_run(tmp_path / f"flat{seed}.h5", epochs=4, milestones=(2,), batches=K, seed=seed)
        with open_run(path) as run:
            s = phase_summary(run, n_perm=200, seed=seed)
        ps += s.p_value.tolist()
        assert set(s.verdict) <= {"within chance", "beats chance"}
    ps = np.array(ps)
    assert np.mean(ps < 0.05) <= 0.15 and 0.3 < ps.mean() < 0.7


def test_control_only_run_and_bins():
    b = score_bins(np.array([5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 9.0]), 3)
    assert b.tolist() == [2, 0, 1, 0, 1, 0, 2] and np.bincount(b).tolist() == [3, 2, 2]


def test_run_without_control_warns_and_uses_the_own_unit(tmp_path, fake_run):
    path = fake_run(tmp_path / "nc.h5", epochs=2, milestones=(1,), probes=("intensity",))
    with open_run(path) as run, pytest.warns(UserWarning, match="no 'random' probe"):
        s = phase_summary(run, n_perm=10)
    assert set(s.unit) == {"own"} and np.allclose(s[[f"bin_{i}" for i in range(1, 5)]].mean(axis=1), 1, atol=0.02)


def test_random_only_run_summarises_the_control(tmp_path, fake_run):
    path = fake_run(tmp_path / "r.h5", epochs=2, milestones=(1,), probes=("random",))
    with open_run(path) as run:
        s = phase_summary(run, n_perm=50)
    assert s.probe.tolist() == ["random", "random"] and isinstance(s, pd.DataFrame)


@pytest.mark.parametrize("spread", [0.0, 0.3, 0.6])
def test_twice_as_far_as_random_reads_two(tmp_path, fake_run, spread):
    """Batches all twice as far as random ones read ~2 in the common unit, whatever their
    spread, while the within-order unit would put the best bin below 1."""
    rng = np.random.default_rng(int(spread * 10))
    prof = 2.0 * (1 + spread * rng.uniform(-1, 1, K))
    prof *= 2.0 / prof.mean()
    path = fake_run(tmp_path / "far.h5", epochs=4, milestones=(2,), batches=K,
                    profiles={"intensity": {0: prof, 1: prof}})
    with open_run(path) as run:
        s = phase_summary(run, n_perm=0)
    bins = s[[f"bin_{i}" for i in range(1, 5)]].to_numpy()
    np.testing.assert_allclose(bins.mean(axis=1), 2.0, rtol=0.02)
    assert (bins > 2 * (1 - spread) - 0.05).all() and (s.best_rel > 1.2).all()
    if spread:
        assert (s.own_best_rel < 1).all()


def test_verdicts_are_holm_corrected_across_the_table(tmp_path, fake_run):
    """Four probes x two phases: p_holm is Holm's adjustment of the table's eight p-values (checked
    against the definition), and the verdict follows p_holm, not the raw p."""
    probes = ("intensity", "hsv", "edges", "lpips", "random")
    steep = np.linspace(0.7, 1.3, K)
    path = fake_run(tmp_path / "four.h5", epochs=4, milestones=(2,), batches=K, probes=probes,
                    profiles={"intensity": {0: steep, 1: steep}})
    with open_run(path) as run:
        s = phase_summary(run, n_perm=400, seed=0)
    p = s.p_value.to_numpy()
    m = len(p)
    order = np.argsort(p, kind="stable")
    ref = np.empty(m)
    ref[order] = np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    np.testing.assert_allclose(s.p_holm.to_numpy(), ref)
    assert (s.n_tests == m).all() and (s.p_holm >= s.p_value).all()
    assert (s.verdict == np.where(s.p_holm <= 0.05, "beats chance", "within chance")).all()
    assert set(s[s.probe == "intensity"].verdict) == {"beats chance"}
