"""gradlab results: the claims' contrasts on runs with known distances, and --check catching a page
that is not what the run files give."""
from __future__ import annotations

import numpy as np
import pytest

from gradlab import results
from gradlab.cli import main
from gradlab.errors import GradlabError
from gradlab.results import claims, pages
from gradlab.results.catalog import CONVERGENCE
from gradlab.runfile.reader import Run

K = 20  # batches; quartiles of 5


@pytest.mark.parametrize("q4", [0.5, 1.0, 1.6])
def test_upper_quartile_contrast_recovers_a_known_profile(tmp_path, fake_run, q4):
    """D of intensity's Q4 batches is q4 x the others' (which equal random's): Q4 − Q1..Q3 = q4 − 1 in
    random units, up to the fake run's 1 % noise."""
    prof = np.r_[np.ones(15), np.full(5, q4)]
    runs = [Run(fake_run(tmp_path / f"s{s}.h5", seed=s, epochs=2, milestones=(1,), batches=K,
                         profiles={"intensity": {0: prof, 1: prof}})) for s in range(3)]
    got = claims.UPPER.per_seed(runs, "intensity", 0)
    assert got == pytest.approx(np.full(3, q4 - 1), abs=0.03)


def test_extremes_contrast_is_the_naive_computation(tmp_path, fake_run):
    rng = np.random.default_rng(0)
    run = Run(fake_run(tmp_path / "r.h5", epochs=3, milestones=(2,), batches=K,
                       profiles={"intensity": {0: rng.uniform(0.5, 2, K)}}))
    d, r = run.distance_matrix("intensity"), run.distance_matrix("random")
    rel = (d / r.mean(axis=1, keepdims=True))[:2].mean(axis=0)  # phase 0 = epochs 0 and 1
    rank = np.argsort(np.argsort(run.batch_scores("intensity", np.array([0, 1])), kind="stable"), kind="stable")
    outer = (rank < 5) | (rank >= 15)
    assert claims.EXTREMES.per_seed([run], "intensity", 0)[0] == pytest.approx(rel[outer].mean() - rel[~outer].mean())


def _fake_pages(monkeypatch, text=b"# page\n"):
    monkeypatch.setattr(pages, "PAGES", (lambda root: {"a.md": text, "a.png": b"\x89PNG"},))
    monkeypatch.setattr(pages, "index_page", lambda root, names: {"index.md": b"# index\n"})


def test_check_names_the_page_that_differs(tmp_path, monkeypatch):
    _fake_pages(monkeypatch)
    out = tmp_path / "pages"
    results.generate(out)
    assert results.check(out) == []
    (out / "a.md").write_bytes(b"# page, edited by hand\n")
    (out / "stale.md").write_bytes(b"")
    assert results.check(out) == ["a.md", "stale.md"]
    with pytest.raises(GradlabError, match=r"a\.md is not what the committed run files give"):
        results.first_difference(out)


def test_cli_check_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    _fake_pages(monkeypatch)
    out = tmp_path / "pages"
    assert main(["results", "--out", str(out)]) == 0
    assert main(["results", "--out", str(out), "--check"]) == 0
    (out / "index.md").unlink()
    assert main(["results", "--out", str(out), "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "index.md" in err[0] and f"gradlab results --out {out}" in err[0]


def test_a_missing_run_file_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(GradlabError, match=r"gradlab run studies/convergence\.toml --variant mnist --seeds 0"):
        CONVERGENCE.paths(tmp_path, "mnist")


def test_the_setting_and_the_planned_seeds_are_read_from_the_runs(tmp_path, fake_run):
    """A family's setting line comes from its runs' configs (phases from the milestones), and a study
    read before all its planned seeds are committed says which seeds the pages rest on."""
    from dataclasses import replace

    from gradlab.results.markdown import provenance, setting_line

    runs = {("mnist", s): Run(fake_run(tmp_path / f"s{s}.h5", seed=s, epochs=6, milestones=(3,), batches=K))
            for s in range(2)}
    line = setting_line(runs)
    assert "6 epochs in 2 learning-rate phases of 3/3 epochs" in line and line.rstrip().endswith("2 seeds.")
    partial = replace(CONVERGENCE, seeds=(0, 1), planned=(0, 1, 2, 3, 4))
    assert "planned for seeds 0, 1, 2, 3, 4; these pages rest on seeds 0, 1" in provenance(partial, tmp_path, runs)
    assert "planned for" not in provenance(replace(partial, planned=(0, 1)), tmp_path, runs)
    for r in runs.values():
        r.close()
