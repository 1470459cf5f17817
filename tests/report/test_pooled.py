"""The report's pooled test over seeds (issue 31): one shared permutation when the seeds share their
batches, a seed-level test when they do not; both hold their level under a null with persistent
batch effects, where independent shuffles per seed do not. Simulations are numpy only (seconds)."""
from __future__ import annotations

import numpy as np
import pytest

from gradlab import open_run
from gradlab.report.summary import (bin_means, holm, holm_across, phase_summary, pooled_permutation_p,
                                    score_bins, seed_level_p, shared_composition)

S, K, BINS = 3, 16, 4


def _independent_shuffles_p(prof, b, n_perm, rng):
    """The old pooled test: every seed shuffled on its own (the naive reference the shared test replaces)."""
    obs = np.nanmin(bin_means(prof, b, BINS).mean(axis=0))
    perm = np.stack([np.stack([rng.permutation(prof[i]) for i in range(S)]) for _ in range(n_perm)])
    stat = np.nanmin(bin_means(perm.reshape(-1, K), b, BINS).reshape(n_perm, S, BINS).mean(axis=1), axis=1)
    return (1 + np.sum(stat <= obs + 1e-12)) / (1 + n_perm)


def test_shared_permutation_holds_its_level_under_persistent_batch_effects():
    """Batch effects shared by the 3 seeds (seed noise 0.3 of their spread), unrelated to the score:
    the shared permutation rejects at ~5% over 1,000 studies; independent shuffles (200 studies, to
    stay fast) reject far more, so the simulation can tell the two apart."""
    rng = np.random.default_rng(11)
    b = score_bins(np.arange(K, dtype=float), BINS)
    study = lambda: 1 + 0.1 * (rng.normal(size=K) + 0.3 * rng.normal(size=(S, K)))  # noqa: E731
    shared = np.mean([pooled_permutation_p(study(), b, BINS, 200, rng)[1] <= 0.05 for _ in range(1000)])
    independent = np.mean([_independent_shuffles_p(study(), b, 200, rng) <= 0.05 for _ in range(200)])
    assert 0.03 <= shared <= 0.07
    assert independent > 0.2


def test_seed_level_test_holds_its_level_when_batches_differ_between_seeds():
    rng = np.random.default_rng(12)
    b = score_bins(np.arange(K, dtype=float), BINS)
    rej = np.mean([seed_level_p(1 + 0.1 * rng.normal(size=(S, K)), b, BINS, 200, rng) <= 0.05 for _ in range(1000)])
    assert 0.03 <= rej <= 0.07


def test_shared_permutation_finds_a_bin_closer_in_every_seed():
    rng = np.random.default_rng(0)
    prof = 1 + 0.05 * rng.normal(size=(S, K))
    prof[:, 12:] -= 0.3  # Q4 closer in every seed
    b = np.stack([score_bins(np.arange(K, dtype=float), BINS)] * S)  # each run's own bins
    obs, p = pooled_permutation_p(prof, b, BINS, 2000, rng)
    assert p < 0.01 and obs == np.min(np.mean([bin_means(prof[i], b[i], BINS) for i in range(S)], axis=0))


def test_shared_composition_reads_the_stored_orders(tmp_path, fake_run):
    """The fake runs draw their order from the seed: different images per seed; the same seed twice
    shares them; an order rebuilt at each epoch never does."""
    own = [open_run(fake_run(tmp_path / f"s{s}.h5", seed=s)) for s in (0, 1)]
    twins = [open_run(fake_run(tmp_path / f"t{i}.h5", seed=5)) for i in (0, 1)]
    per = [open_run(fake_run(tmp_path / f"p{i}.h5", seed=5, probes=("intensity", "loss", "random"),
                             per_epoch=("loss",))) for i in (0, 1)]
    assert not shared_composition(own, "intensity") and shared_composition(twins, "intensity")
    assert not shared_composition(per, "loss")
    s = phase_summary(twins, n_perm=50)
    assert set(s.pooled_test) == {"shared permutation"}
    assert set(phase_summary(own, n_perm=50).pooled_test) == {"t over seeds"}
    for r in own + twins + per:
        r.close()


def test_holm_across_corrects_the_whole_table(tmp_path, fake_run):
    runs = {f"r{s}": open_run(fake_run(tmp_path / f"h{s}.h5", seed=s, probes=("intensity", "hsv", "random")))
            for s in range(2)}
    got = holm_across({n: phase_summary(r, n_perm=100, seed=1) for n, r in runs.items()})
    p = np.concatenate([got[n].p_value.to_numpy() for n in runs])
    np.testing.assert_allclose(np.concatenate([got[n].p_holm.to_numpy() for n in runs]), holm(p))
    assert all((got[n].n_tests == len(p)).all() for n in runs)
    for r in runs.values():
        r.close()


def test_shared_permutation_p_is_the_exact_permutation_p():
    """K = 6 batches in 3 bins, 2 seeds with their own bins: all 720 shared permutations against the
    Monte Carlo p (the observed statistic counted once, as in the implementation's (1 + hits) / (1 + n))."""
    import itertools

    rng = np.random.default_rng(4)
    prof = 1 + rng.normal(size=6) + 0.2 * rng.normal(size=(2, 6))
    b = np.array([score_bins(np.arange(6.0), 3), score_bins(np.array([0, 1, 2, 3, 5, 4.0]), 3)])
    stat = lambda p: np.nanmin(np.mean([bin_means(p[i], b[i], 3) for i in range(2)], axis=0))  # noqa: E731
    obs = stat(prof)
    exact = np.mean([stat(prof[:, list(q)]) <= obs + 1e-12 for q in itertools.permutations(range(6))])
    got_obs, p = pooled_permutation_p(prof, b, 3, 20000, np.random.default_rng(0))
    assert got_obs == obs and p == pytest.approx(exact, abs=0.01)
