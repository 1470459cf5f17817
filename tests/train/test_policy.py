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


def _input(batches, score, labels=None, seed=0):
    return policy.PolicyInput(batches.reshape(-1), B, score, labels, seed)


def test_visiting_order_changes_between_epochs_but_not_the_batches():
    batches, score = _cut(np.random.default_rng(1))
    gen = torch.Generator().manual_seed(0)
    a, b = (policy.all_batches(_input(batches, score), 0, gen).numpy().reshape(-1, B) for _ in range(2))
    assert not np.array_equal(a, b)
    assert sorted(map(tuple, a)) == sorted(map(tuple, b)) == sorted(map(tuple, batches))


def test_the_runner_trains_on_the_chosen_batches_of_the_intensity_cut(tiny):
    cfg = tiny(data={"subset": 256, "augment": False}, train={"epochs": 2, "milestones": [1], "batch_size": 32,
                                                               "policy": "drop_extreme_batches"}, track={"enabled": False})
    runner = Runner(cfg, progress=False)
    scores = compute_scores("intensity", runner.study.train)
    ranked = np.argsort(get_metric("intensity").primary(scores), kind="stable")  # ascending, as the cut sorts
    middle = set(ranked[32:224].tolist())  # 8 batches of 32: round(0.1 * 8) = 1 dropped at each end
    for e in range(2):
        order = runner._epoch_order(e, torch.Generator().manual_seed(e)).numpy()
        assert len(order) == 192 and set(order.tolist()) == middle
    runner.lock.release() if runner.lock is not None else None


def test_a_policy_with_a_training_order_is_refused(tiny):
    with pytest.raises(ConfigError, match='set track.order = "shuffle"'):
        tiny(train={"policy": "batches"}, track={"order": "intensity"}).validate()
    with pytest.raises(ConfigError, match='did you mean "drop_extreme_batches"'):
        tiny(train={"policy": "drop_extreme_batchs"}).validate()


# ------------------------------------------------------------------ the step-matched R1 / R2 arms and their controls

N, M = 200, 10  # 200 images sorted by a score, batches of 10: K = 20


def _sorted_input(seed=0, labels=None):
    rng = np.random.default_rng(seed)
    index = rng.permutation(N)  # dataset indices, sorted by the (hidden) score: position = rank
    score = np.arange(N // M, dtype=float)  # the contiguous batches' mean scores rise with k
    return policy.PolicyInput(index, M, score, labels, seed)


@pytest.mark.parametrize("seed", range(3))
def test_r1_batches_drop_the_outer_tenth_at_each_end_and_the_control_as_many_at_random(seed):
    cut = _sorted_input(seed)
    gen = torch.Generator().manual_seed(seed)
    r1 = policy.drop_extreme_batches(cut, 0, gen).numpy().reshape(-1, M)
    ctl = policy.drop_random_batches(cut, 0, gen).numpy().reshape(-1, M)
    rank = {int(i): p // M for p, i in enumerate(cut.index)}  # dataset index -> its contiguous batch
    kept = sorted({rank[int(r[0])] for r in r1})
    assert kept == list(range(2, 18))  # of 20 batches, 2 dropped at each end: symmetric
    assert len(ctl) == len(r1) == 16  # the same steps on the same number of images
    ctl_batches = {rank[int(r[0])] for r in ctl}
    assert len(ctl_batches) == 16 and all(len({rank[int(i)] for i in r}) == 1 for r in ctl)  # whole sorted batches
    again = policy.drop_random_batches(cut, 1, torch.Generator().manual_seed(99)).numpy().reshape(-1, M)
    assert {rank[int(r[0])] for r in again} == ctl_batches  # the control's set is fixed for the run


def test_r1_images_keep_the_middle_80_percent_and_the_control_as_many_random_images():
    cut = _sorted_input(1)
    gen = torch.Generator().manual_seed(0)
    r1 = policy.drop_extreme_images(cut, 0, gen).numpy()
    assert sorted(r1.tolist()) == sorted(cut.index[20:180].tolist())
    ctl = policy.drop_random_images(cut, 0, gen).numpy()
    assert len(ctl) == len(r1) == 160 and len(set(ctl.tolist())) == 160
    assert set(ctl.tolist()) == set(policy.drop_random_images(cut, 3, gen).numpy().tolist())
    assert set(ctl.tolist()) != set(r1.tolist())


def test_r2_upper_quartile_then_everything_and_its_random_quarter_control():
    cut = _sorted_input(2)
    gen = torch.Generator().manual_seed(0)
    r2 = policy.upper_quartile_first(cut, 0, gen).numpy()
    assert sorted(r2.tolist()) == sorted(cut.index[150:].tolist())
    ctl = policy.random_quarter_first(cut, 0, gen).numpy()
    assert len(ctl) == 50 and set(ctl.tolist()) != set(r2.tolist())
    assert policy.upper_quartile_first(cut, 1, gen) is None and policy.random_quarter_first(cut, 2, gen) is None


def test_class_policy_draws_class_stratified_batches_anew_each_epoch():
    labels = np.repeat(np.arange(4), N // 4)  # 4 classes of 50: every batch of 10 holds 2 or 3 of each
    cut = _sorted_input(0, labels)
    gen = torch.Generator().manual_seed(0)
    a, b = (policy.class_batches(cut, 0, gen).numpy() for _ in range(2))
    assert sorted(a.tolist()) == list(range(N)) and not np.array_equal(a, b)
    for row in a.reshape(-1, M):
        counts = np.bincount(labels[row], minlength=4)
        assert counts.min() >= 2 and counts.max() <= 3


def test_class_policy_refuses_per_pixel_masks_before_training(tiny):
    cfg = tiny(data={"dataset": "buildings", "subset": 32, "test_subset": 8, "tile": 32},
               model={"name": "resunet", "width": 4, "num_classes": 2},
               train={"policy": "class"}, track={"enabled": False})
    with pytest.raises(ConfigError, match='train.policy = "class" needs one class label per image.*choose another '
                                          'train.policy'):
        Runner(cfg, progress=False)
    from pathlib import Path

    assert not Path(cfg.output.path).exists()  # refused before the run file is made
