"""The class-balanced cut (``batching = "class"``, ``<order>@class``) and the class-stratified
random control (``random@class``), checked against naive counts of the labels in every batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gradlab import registry
from gradlab.config import config_from_dict
from gradlab.data.datasets import ImageSet
from gradlab.data.orders import build_order, by_class, compute_scores, random_order
from gradlab.errors import ConfigError


def _counts(index: np.ndarray, labels: np.ndarray, m: int, classes: np.ndarray) -> np.ndarray:
    """``[K, C]``: labels of each class in each full batch, counted by hand."""
    k = len(index) // m
    return np.array([[int(np.sum(labels[index[b * m:(b + 1) * m]] == c)) for c in classes] for b in range(k)])


@pytest.mark.parametrize("n,m,sizes_seed", [(400, 32, 0), (1000, 64, 1), (257, 16, 2), (96, 12, 3), (50, 50, 4)])
def test_every_batch_holds_every_class_in_proportion(n, m, sizes_seed):
    rng = np.random.default_rng(sizes_seed)
    labels = rng.choice([2, 5, 7, 9], size=n, p=rng.dirichlet(np.full(4, 3.0)))  # labels need not be 0..C-1
    index = rng.permutation(n)
    out = by_class(index, m, labels)
    assert sorted(out.tolist()) == list(range(n))  # a permutation: nothing lost, nothing twice
    k = n // m
    classes = np.unique(labels)
    counts = _counts(out, labels, m, classes)
    assert (counts.sum(1) == m).all()
    kept = counts.sum(0)
    assert np.abs(counts - kept / k).max() < 1  # floor or ceil of the class's share of a batch
    full = np.array([np.sum(labels == c) for c in classes])
    assert np.abs(kept - k * m * full / n).max() < 1 + 1e-9  # the remainder is taken in proportion
    cumulative = np.cumsum(counts, 0) - np.arange(1, k + 1)[:, None] * kept / k
    assert np.abs(cumulative).max() < 1  # every class's cumulative share on track, batch by batch


def test_batch_k_holds_every_class_at_the_same_within_class_quantile():
    rng = np.random.default_rng(5)
    n, m = 600, 40
    labels = rng.integers(0, 6, n)
    score = rng.normal(size=n) + labels  # classes differ in score, as digits differ in intensity
    index = np.argsort(score, kind="stable")
    out = by_class(index, m, labels)
    k = n // m
    for c in range(6):
        ranked = index[labels[index] == c]  # class c sorted by score
        mine = [i for i in out[: k * m] if labels[i] == c]  # in batch order
        assert mine == ranked[: len(mine)].tolist()  # batch 0 takes the lowest, then the next, ...
        rank = {int(i): r / len(ranked) for r, i in enumerate(ranked)}
        q = [np.mean([rank[int(i)] for i in out[b * m:(b + 1) * m] if labels[i] == c]) for b in range(k)]
        np.testing.assert_allclose(q, (np.arange(k) + 0.5) / k, atol=0.5 / k + 1 / len(ranked))
    # the contiguous cut of the same order is class-skewed; this one is not
    contiguous = _counts(index, labels, m, np.arange(6))
    assert contiguous.max() - contiguous.min() > 10 and np.ptp(_counts(out, labels, m, np.arange(6)), axis=0).max() <= 1


def test_remainder_leaves_out_the_top_of_every_class_by_largest_remainder():
    """N = 103, m = 10: K = 10 and R = 3 left out. Quotas 3 * (60, 30, 13) / 103 = 1.75, 0.87, 0.38:
    floors (1, 0, 0), then the largest remainders (0.87, then 0.75): (2, 1, 0)."""
    labels = np.repeat([0, 1, 2], [60, 30, 13])
    score = np.arange(103.0)[::-1]  # descending with the index: sorted order is 102, 101, ...
    index = np.argsort(score, kind="stable")
    out = by_class(index, 10, labels)
    rest = out[100:]
    assert np.bincount(labels[rest], minlength=3).tolist() == [2, 1, 0]
    assert sorted(rest.tolist()) == [0, 1, 60]  # each class's highest-scored images (lowest index here)
    counts = _counts(out, labels, 10, np.arange(3))
    assert (counts[:, 2] >= 1).all() and sorted(set(counts[:, 0])) == [5, 6]


def test_small_classes_are_spread_and_never_dropped():
    # class 3 has 5 images for 12 batches, class 4 a single one: each still appears, in as many batches
    labels = np.concatenate([np.repeat([0, 1, 2], 110), np.full(5, 3), [4]])
    rng = np.random.default_rng(0)
    index = rng.permutation(len(labels))
    out = by_class(index, 28, labels)  # N = 336 = 12 x 28: no remainder
    counts = _counts(out, labels, 28, np.arange(5))
    assert counts[:, 3].sum() == 5 and counts[:, 4].sum() == 1 and set(counts[:, 3]) == {0, 1}
    assert (counts.sum(1) == 28).all()
    # with a remainder to take, the single image of class 4 is kept while others can give one
    out = by_class(index[:-1], 25, labels)  # 335 images: K = 13, R = 10
    assert 4 in labels[out[:325]].tolist()


def test_class_cut_needs_one_label_per_image():
    with pytest.raises(ConfigError, match="one class label per image"):
        by_class(np.arange(8), 4, np.zeros((8, 4, 4), dtype=np.int64))  # masks
    with pytest.raises(ConfigError, match="one class label per image"):
        by_class(np.arange(8), 4, None)


def _data(n=240, seed=0, classes=5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = (torch.rand(n, 3, 8, 8, generator=g) * 60 + labels.view(-1, 1, 1, 1) * 35).to(torch.uint8)
    return ImageSet("t", images, labels, tuple(str(c) for c in range(classes)))


def test_random_at_class_is_the_shuffle_cut_by_class():
    data = _data()
    labels = data.labels.numpy()
    shuffle = random_order(len(data), 24, seed=3)
    o = build_order(registry.RANDOM, data, 24, 3, batching="class")
    assert (o.name, o.batching, o.score_label) == ("random@class", "class", "batch number")
    np.testing.assert_array_equal(o.batch_score, np.arange(10))
    counts = _counts(o.index, labels, 24, np.arange(5))
    assert np.ptp(counts - counts.sum(0) / 10, axis=0).max() < 1 + 1e-9 and (counts >= 1).all()
    for c in range(5):  # otherwise random: each class in the shuffle's order
        np.testing.assert_array_equal(o.index[labels[o.index] == c], shuffle.index[labels[shuffle.index] == c])
    other = build_order(registry.RANDOM, data, 24, 4, batching="class")
    assert not np.array_equal(other.index, o.index)
    # a cut by position of a random order is another random order: random keeps its one shuffle
    assert build_order(registry.RANDOM, data, 24, 3, batching="stratified").name == "random"


def test_metric_order_cut_by_class_sorts_within_class():
    data = _data(seed=1)
    o = build_order("intensity", data, 24, 0, batching="class")
    assert o.name == "intensity@class" and o.batching == "class"
    labels, score = data.labels.numpy(), compute_scores("intensity", data)
    for c in range(5):  # batch k = quantile k of every class: each class's mean score ascends with k
        means = [score[i][labels[i] == c].mean() for i in o.index[:240].reshape(10, 24)]
        assert np.all(np.diff(means) > 0)
    np.testing.assert_allclose(o.batch_score, score[o.index[:240]].reshape(10, 24).mean(1))
    counts = _counts(o.index, labels, 24, np.arange(5))
    assert np.ptp(counts, axis=0).max() <= 1


def test_names_config_and_the_study_probes(tmp_path):
    assert registry.probe_name("intensity", "class") == "intensity@class"
    assert registry.split_probe_name("random@class") == ("random", "class")
    assert registry.CLASS_CONTROL == "random@class" and registry.order_kind("random@class") == "control"
    assert registry.random_cuts(["contiguous", "stratified", "class"]) == ("contiguous", "class")
    assert registry.random_cuts(["stratified"]) == ("contiguous",)
    with pytest.raises(ConfigError, match="contiguous and/or stratified and/or class"):
        config_from_dict({"track": {"batching": ["klass"]}}).validate()
    from gradlab.train.runner import _fixed_probes

    cfg = config_from_dict({"data": {"dataset": "synthetic", "subset": 96},
                            "train": {"batch_size": 16, "seed": 0},
                            "track": {"probes": ["intensity", "random"], "batching": ["contiguous", "class"]}})
    names = [o.name for o in _fixed_probes(cfg.validate(), _data(96), None, lambda m, d: d.images.float().mean(
        (1, 2, 3)).numpy())]
    assert names == ["intensity", "intensity@class", "random", "random@class"]


def test_gradient_orders_cut_by_class():
    from gradlab.config import ModelConfig
    from gradlab.data.datasets import BatchLoader
    from gradlab.models import build_model
    from gradlab.track.gradorders import GradientProbe, SampleScorer, gradient_probes
    from gradlab.track.layout import ParamLayout
    from gradlab.track.probe import FrozenModel

    torch.manual_seed(0)
    data = _data(60, seed=2)
    model = build_model(ModelConfig(name="smallcnn", norm="none", width=4))
    loader = BatchLoader(data, torch.device("cpu"), 12)
    probes = gradient_probes(loader, ["loss", "match"], ["contiguous", "class"])
    assert sorted(probes) == ["loss", "loss@class", "match"]  # match builds its batches: one cut
    p = probes["loss@class"]
    p.prepare(FrozenModel(model, ParamLayout.of(model)), None)
    labels = data.labels.numpy()
    assert np.ptp(_counts(p.index, labels, 12, np.arange(5)), axis=0).max() <= 1
    s = p.scorer.scores(FrozenModel(model, ParamLayout.of(model)), None)
    for c in range(5):  # within each class, ascending by the per-sample loss
        mine = p.index[labels[p.index] == c]
        assert np.all(np.diff(s.loss[mine][: -1]) >= -1e-6)
    masks = ImageSet("m", data.images, torch.zeros(60, 8, 8, dtype=torch.uint8), ("bg", "fg"))
    with pytest.raises(ConfigError, match="one class label per image"):
        GradientProbe("loss", "class", SampleScorer(BatchLoader(masks, torch.device("cpu"), 12)))
