"""The second control, ``random@class``: the phase summary, the reference comparison and the report
give every probe in its unit too (checked against D divided by hand), and runs without it give
the same tables as before."""
from __future__ import annotations

import numpy as np
import pytest

from gradlab import open_run
from gradlab.report.compare import reference_comparison
from gradlab.report.page import build_report
from gradlab.report.summary import phase_summary
from gradlab.report.units import controls
from tests.conftest import write_fake_run

K = 16
BOTH = ("random", "random@class", "intensity", "intensity@class")


def _run(path, probes=BOTH, seed=0):
    flat = lambda v: {0: np.full(K, v), 1: np.full(K, v)}  # noqa: E731
    ramp = np.linspace(0.5, 1.5, K)  # intensity@class: closer in its low-score batches
    profiles = {"random@class": flat(0.6), "intensity": flat(2.4), "intensity@class": {0: ramp, 1: ramp}}
    return write_fake_run(path, epochs=4, milestones=(2,), batches=K, probes=probes, seed=seed, profiles=profiles)


def _naive(run, probe, control, phase):
    """``[K]``: the probe's D over the control's epoch mean, averaged over the phase, by hand."""
    epochs = run.phase_epochs(phase)
    d = run.distance_matrix(probe)[epochs]
    unit = run.distance_matrix(control)[epochs].mean(axis=1, keepdims=True)
    return (d / unit).mean(axis=0)


def _quartile_means(profile, scores):
    rank = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
    return [profile[(rank * 4) // len(scores) == q].mean() for q in range(4)]


def test_phase_summary_in_either_control_unit(tmp_path):
    with open_run(_run(tmp_path / "r.h5")) as run:
        assert controls(run) == ["random", "random@class"]
        for control in ("random", "random@class"):
            s = phase_summary(run, control=control, n_perm=50)
            assert set(s.probe) == set(BOTH) - {control} and (s.unit == control).all()
            for r in s.itertuples():
                prof = _naive(run, r.probe, control, r.phase)
                want = _quartile_means(prof, run.batch_scores(r.probe, run.phase_epochs(r.phase)))
                np.testing.assert_allclose([r.bin_1, r.bin_2, r.bin_3, r.bin_4], want, rtol=1e-9)
        by = phase_summary(run, control="random@class", n_perm=0).set_index(["probe", "phase"])
        assert by.loc[("intensity", 0), "best_rel"] == pytest.approx(4.0, rel=0.03)  # 2.4 / 0.6
        assert by.loc[("random", 0), "best_rel"] == pytest.approx(1 / 0.6, rel=0.03)
        plain = phase_summary(run, n_perm=0).set_index(["probe", "phase"])
        assert plain.loc[("random@class", 0), "best_rel"] == pytest.approx(0.6, rel=0.03)


def test_reference_comparison_gives_both_units(tmp_path):
    runs = [open_run(_run(tmp_path / f"s{s}.h5", seed=s)) for s in range(3)]
    try:
        t = reference_comparison(runs).set_index(["phase", "probe"])
        c = reference_comparison(runs, control="random@class").set_index(["phase", "probe"])
        for phase in (0, 1):
            for p in BOTH:
                want = np.mean([_naive(r, p, "random@class", phase).mean() for r in runs])
                assert t.loc[(phase, p), "class_mean_rel"] == pytest.approx(want, rel=1e-9)
                assert c.loc[(phase, p), "mean_rel"] == pytest.approx(want, rel=1e-9)
                assert c.loc[(phase, p), "random_mean_rel"] == pytest.approx(t.loc[(phase, p), "mean_rel"], rel=1e-9)
                assert t.loc[(phase, p), "class_best_rel"] == pytest.approx(c.loc[(phase, p), "best_rel"], rel=1e-9)
        assert t.loc[(0, "intensity"), "class_mean_rel"] == pytest.approx(4.0, rel=0.03)
        assert np.isfinite(t.class_mean_ci_low).all() and (t.class_mean_ci_low <= t.class_mean_rel).all()
        assert c.loc[(0, "random"), "kind"] == "control" and c.loc[(0, "random@class"), "batching"] == "class"
    finally:
        for r in runs:
            r.close()


def test_without_random_at_class_the_tables_are_as_before(tmp_path):
    with open_run(_run(tmp_path / "one.h5", probes=("random", "intensity", "intensity@class"))) as run:
        assert controls(run) == ["random"]
        t = reference_comparison(run)
        assert not [c for c in t.columns if c.startswith(("class_", "random_"))]
        assert list(t.columns[:8]) == ["phase", "probe", "order", "batching", "kind", "n_seeds", "n_batches",
                                       "mean_rel"]
        s = phase_summary(run, n_perm=0)
        assert (s.unit == "random").all()
        for r in s.itertuples():
            np.testing.assert_allclose(r.bin_1, _quartile_means(_naive(run, r.probe, "random", r.phase),
                                                                run.batch_scores(r.probe))[0], rtol=1e-9)
        with pytest.raises(KeyError, match="class to track.batching"):
            reference_comparison(run, control="random@class")
        page, _ = build_report([run], n_perm=20)
        assert "In units of <code>random@class</code>" not in page and "random@class unit" not in page


def test_report_gives_the_class_unit_tables(tmp_path):
    with open_run(_run(tmp_path / "r.h5")) as run:
        page, _ = build_report([run], n_perm=20)
    assert "In units of <code>random@class</code>" in page
    assert "<th>mean D (random@class unit)</th>" in page and "random@class control: best / spread" in page
    assert "vs random@class" in page and "vs random<" in page
