"""The run files committed in results/ (the results pages' data): every classification run trained
well above chance, and every page in docs/results/ is what they give (also run by .ci/run as
``gradlab results --check``)."""
from __future__ import annotations

import pytest

from gradlab.results import DOCS_DIR, check, repo_root
from gradlab.results.catalog import CONVERGENCE, SEARCH, TRAINING
from gradlab.runfile.reader import Run

ROOT = repo_root()
CHANCE_FLOOR = 0.3  # 10 classes: chance is 0.1; a run below 0.3 supports no claim about training


@pytest.mark.parametrize("study", [CONVERGENCE, TRAINING, SEARCH], ids=lambda s: s.name)
def test_every_committed_classification_run_trained(study):
    low = []
    for v in study.variants:
        for p in study.paths(ROOT, v):
            with Run(p) as r:
                acc = float(r.train_curves()["test_acc"].iloc[-1])
                if not acc >= CHANCE_FLOOR:
                    low.append(f"{p.name}: {acc:.3f}")
    assert not low, low


def test_committed_pages_are_what_the_runs_give():
    assert check(ROOT / DOCS_DIR) == []
