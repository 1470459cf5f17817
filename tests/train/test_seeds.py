"""Seeds as an axis: --seeds runs one file per seed; the seed-group summary's intervals and
pooled permutation test on constructed runs whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gradlab import open_run
from gradlab.cli import main
from gradlab.report.summary import phase_summary, t_interval
from gradlab.train.variants import parse_seeds

K = 20


def _group(tmp_path, fake_run, profiles_of, n=3):
    return [open_run(fake_run(tmp_path / f"r-s{s}.h5", epochs=4, milestones=(2,), batches=K, seed=s,
                              profiles=profiles_of(s))) for s in range(n)]


def test_t_interval_against_scipy():
    x = np.random.default_rng(0).normal(size=(5, 3))
    m, lo, hi = t_interval(x)
    for j in range(3):
        want = stats.t.interval(0.95, 4, loc=x[:, j].mean(), scale=stats.sem(x[:, j]))
        np.testing.assert_allclose((lo[j], hi[j]), want)


def test_a_bin_closer_in_every_seed_excludes_the_control(tmp_path, fake_run):
    def prof(s):
        rng = np.random.default_rng(s)
        top = np.where(np.arange(K) >= 15, 0.7 + 0.03 * rng.standard_normal(), 1.0)
        return {"intensity": {0: top, 1: top}}

    runs = _group(tmp_path, fake_run, prof)
    s = phase_summary(runs, n_perm=300)
    assert (s.n_seeds == 3).all() and (s.best_bin == 4).all() and set(s.unit) == {"random"}
    assert (s.ci_high < s.control_ci_low).all()  # the interval excludes the control's
    assert (s.ci_low <= s.best_rel).all() and (s.best_rel <= s.ci_high).all()
    assert (s.p_value < 0.01).all() and (s.verdict == "beats chance").all()
    for r in runs:
        r.close()


def test_no_signal_group_is_mostly_within_chance(tmp_path, fake_run):
    ps = []
    for draw in range(20):
        runs = [open_run(fake_run(tmp_path / f"n{draw}-s{s}.h5", epochs=2, milestones=(1,), batches=K,
                                  seed=100 * draw + s)) for s in range(3)]
        ps += phase_summary(runs, n_perm=100, seed=draw).p_value.tolist()
        for r in runs:
            r.close()
    ps = np.array(ps)
    assert np.mean(ps > 0.05) >= 0.8 and 0.3 < ps.mean() < 0.7


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5") == [3, 4, 5]
    with pytest.raises(Exception, match="--seeds"):
        parse_seeds("a,b")


@pytest.mark.e2e
def test_cli_seeds_with_variants(tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text('[data]\nsubset = 128\ntest_subset = 32\naugment = false\n[train]\nepochs = 1\nbatch_size = 32\n'
                     'milestones = []\ndevice = "cpu"\n[track]\nprobes = ["random"]\n'
                     f'[output]\npath = "{tmp_path / "st.h5"}"\nheatmaps = false\n'
                     '[variants]\na = []\nb = ["train.lr=0.01"]\n')
    assert main(["run", str(study), "--quiet", "--no-score-cache", "--variant", "all", "--seeds", "0,1"]) == 0
    for v in ("a", "b"):
        for s in (0, 1):
            with open_run(tmp_path / f"st-{v}-s{s}.h5") as run:
                assert run.config["train"]["seed"] == s and run.status == "complete"
    assert main(["run", str(study), "--quiet", "--no-score-cache", "--seeds", "0,1"]) == 0
    assert (tmp_path / "st-s1.h5").exists()
    assert main(["run", str(study), "--quiet", "--no-score-cache", "--seeds", "0,1"]) == 2  # outputs exist
    assert "st-s0.h5 (s0) already exists" in capsys.readouterr().err


def test_report_shows_the_seed_group(tmp_path, fake_run):
    from gradlab.report.page import build_report

    runs = _group(tmp_path, fake_run, lambda s: {})
    page, figs = build_report(runs, n_perm=20)
    assert "id='seeds'" in page and "3 seeds" in page and "95% Student-t" in page
    assert any(f.slug.startswith("seeds") for f in figs)
    single, _ = build_report(runs[:1], n_perm=20)
    assert "id='seeds'" not in single
    for r in runs:
        r.close()
