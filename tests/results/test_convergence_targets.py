"""Issue 28: the studies behind verdicts about trained networks converge, and their phases are
phases. Every committed run file of the convergence study, and of the training study's controls, on
MNIST or Fashion-MNIST reaches the accuracy targets (``catalog.ACCURACY_TARGETS``): no seed below the
floor and, once every seed of a variant is committed, a mean at or above the target; every
learning-rate phase lasts at least ``MIN_PHASE_EPOCHS`` epochs. The training study's other arms are
interventions whose accuracy is the finding: their final accuracy is printed, not required.

Run files arrive one by one while the studies run (studies/run_queue.sh); the test checks those
committed so far and fails on the first that misses."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from gradlab.results import repo_root
from gradlab.results.catalog import ACCURACY_TARGETS, CONVERGENCE, MIN_PHASE_EPOCHS, MIN_SEEDS, SEARCH, TRAINING
from gradlab.runfile.reader import Run

ROOT = repo_root()
CONTROLS = {v for v in TRAINING.variants if v.endswith("-shuffle")}


def _required(study, variant: str) -> bool:
    return study is CONVERGENCE or variant in CONTROLS


def _committed(study):
    for v in study.variants:
        for s in study.seeds:
            p = study.path(ROOT, v, s)
            if p.is_file():
                yield v, s, p


@pytest.mark.parametrize("study", [CONVERGENCE, TRAINING], ids=lambda s: s.name)
def test_committed_runs_converge_and_phases_are_phases(study):
    finals: dict[str, list[float]] = {}
    problems = []
    for v, s, p in _committed(study):
        with Run(p) as r:
            curves = r.train_curves()
            dataset = r.config["data"]["dataset"]
            phases = Counter(curves["train_phase"].astype(int).tolist())
        short = {ph: n for ph, n in phases.items() if n < MIN_PHASE_EPOCHS}
        if short:
            problems.append(f"{p.name}: phases {short} shorter than {MIN_PHASE_EPOCHS} epochs")
        if dataset in ACCURACY_TARGETS and _required(study, v):
            acc = float(curves["test_acc"].iloc[-1])
            finals.setdefault(v, []).append(acc)
            if acc < ACCURACY_TARGETS[dataset][1]:
                problems.append(f"{p.name}: final test accuracy {acc:.4f} < {ACCURACY_TARGETS[dataset][1]}")
    for v, accs in finals.items():
        dataset = "mnist" if v.startswith("mnist") else "fashion-mnist"
        if len(accs) == len(study.seeds) and np.mean(accs) < ACCURACY_TARGETS[dataset][0]:
            problems.append(f"{study.name}-{v}: mean final test accuracy {np.mean(accs):.4f} < "
                            f"{ACCURACY_TARGETS[dataset][0]}")
    assert not problems, problems


def test_the_study_files_have_phases_of_at_least_three_epochs():
    import tomllib

    for study in (CONVERGENCE, TRAINING):
        train = tomllib.loads((ROOT / study.study_file).read_text())["train"]
        bounds = [0, *train["milestones"], train["epochs"]]
        assert min(b - a for a, b in zip(bounds, bounds[1:])) >= MIN_PHASE_EPOCHS, study.study_file


def test_every_committed_mnist_and_fashion_run_is_read_and_checked():
    """Every MNIST and Fashion-MNIST run file in results/ is one of the convergence or training
    study's catalogued seeds (whose accuracy and phases the test above checks), or of the `search`
    reference, whose page says it keeps a small setting and draws no verdict. A file outside them,
    such as a seed the catalog does not name yet, fails here: no page would read it unchecked."""
    read = {CONVERGENCE.path(ROOT, v, s).name for v in CONVERGENCE.variants for s in CONVERGENCE.seeds}
    read |= {TRAINING.path(ROOT, v, s).name for v in TRAINING.variants for s in TRAINING.seeds}
    stray = []
    for p in sorted((ROOT / "results").glob("*.h5")):
        if p.name.startswith(f"{SEARCH.name}-") or p.name in read:
            continue
        with Run(p) as r:
            if r.config["data"]["dataset"] in ACCURACY_TARGETS:
                stray.append(p.name)
    assert not stray, stray


def test_the_verdict_studies_have_their_planned_seeds():
    """Issue 28: at least five seeds per variant behind every verdict about trained networks. The
    pages read the catalogued seeds; every one of them must be committed (``Study.paths`` refuses a
    missing one), so the catalog naming five seeds is the committed runs having them."""
    for study in (CONVERGENCE, TRAINING):
        assert len(study.seeds) >= MIN_SEEDS, (study.name, study.seeds)
        assert study.seeds == study.planned, (study.name, study.seeds, study.planned)
        for v in study.variants:
            assert len(study.paths(ROOT, v)) == len(study.seeds)
