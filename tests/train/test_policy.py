"""Training policies (train.policy): which images each epoch trains on, checked against the
metric's contiguous cut computed here from the metric's own scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gradlab.data.orders import compute_scores
from gradlab.errors import ConfigError
from gradlab.metrics import get_metric
from gradlab.train import policy
from gradlab.train.runner import Runner

K, B = 8, 4


def _cut(rng):
    """K batches of B distinct indices with shuffled batch scores."""
    return rng.permutation(K * B).reshape(K, B), rng.permutation(K).astype(float)


@pytest.mark.parametrize("seed", range(5))
def test_drop_extremes_keeps_the_middle_half_by_mean_metric(seed):
    batches, score = _cut(np.random.default_rng(seed))
    got = policy.drop_extremes(batches, score, 0, torch.Generator().manual_seed(seed)).numpy().reshape(-1, B)
    kept = sorted(score[[int(np.flatnonzero((batches == row[0]).any(1))[0]) for row in got]])
    assert kept == [2.0, 3.0, 4.0, 5.0]  # of scores 0..7, the quartiles {0,1} and {6,7} are dropped
    assert sorted(map(tuple, got)) == sorted(map(tuple, batches[(score >= 2) & (score <= 5)]))


def test_high_first_is_the_upper_half_in_phase_0_then_shuffle():
    batches, score = _cut(np.random.default_rng(0))
    got = policy.high_first(batches, score, 0, torch.Generator().manual_seed(0)).numpy().reshape(-1, B)
    assert sorted(map(tuple, got)) == sorted(map(tuple, batches[score >= 4]))
    assert policy.high_first(batches, score, 1, torch.Generator()) is None


def test_visiting_order_changes_between_epochs_but_not_the_batches():
    batches, score = _cut(np.random.default_rng(1))
    gen = torch.Generator().manual_seed(0)
    a, b = (policy.all_batches(batches, score, 0, gen).numpy().reshape(-1, B) for _ in range(2))
    assert not np.array_equal(a, b)
    assert sorted(map(tuple, a)) == sorted(map(tuple, b)) == sorted(map(tuple, batches))


def test_the_runner_trains_on_the_chosen_batches_of_the_intensity_cut(tiny):
    cfg = tiny(data={"subset": 256, "augment": False}, train={"epochs": 2, "milestones": [1], "batch_size": 32,
                                                               "policy": "drop_extremes"}, track={"enabled": False})
    runner = Runner(cfg, progress=False)
    scores = compute_scores("intensity", runner.study.train)
    ranked = np.argsort(get_metric("intensity").primary(scores), kind="stable")  # ascending, as the cut sorts
    middle = set(ranked[64:192].tolist())  # 8 batches of 32: drop 2 at each end
    for e in range(2):
        order = runner._epoch_order(e, torch.Generator().manual_seed(e)).numpy()
        assert len(order) == 128 and set(order.tolist()) == middle
    runner.lock.release() if runner.lock is not None else None


def test_a_policy_with_a_training_order_is_refused(tiny):
    with pytest.raises(ConfigError, match='set track.order = "shuffle"'):
        tiny(train={"policy": "batches"}, track={"order": "intensity"}).validate()
    with pytest.raises(ConfigError, match='did you mean "drop_extremes"'):
        tiny(train={"policy": "drop_extreme"}).validate()
