"""Gradient-informed orders against naive references: per-sample gradients vs a loop of
single-image autograd calls, the stratified cut vs positions by hand, greedy matching vs a
brute-force greedy, and a tracked run's stored orders and D vs autograd at theta_e."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradlab.config import ModelConfig
from gradlab.data.orders import batch_means, stratify
from gradlab.models import build_model
from gradlab.track.gradorders import GradientProbe, SampleScorer
from gradlab.track.layout import ParamLayout
from gradlab.track.match import greedy_match
from gradlab.track.persample import chunk_size, per_sample_grads, score_samples
from gradlab.track.probe import FrozenModel
from gradlab.track.sketch import CountSketch


def _model(norm: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(name="smallcnn", norm=norm))
    for m in model.modules():  # BatchNorm running statistics away from their init, so eval mode matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _naive_grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Loss [n] and flat gradient [n, P] of each image alone, eval mode, plain torch.autograd."""
    model = copy.deepcopy(model).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    losses, grads = [], []
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double())
        losses.append(float(loss.detach()))
    return np.array(losses), torch.stack(grads).numpy()


def _data(n: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("norm", ["bn", "agc", "none"])
def test_per_sample_grads_equal_single_image_autograd(norm):
    model = _model(norm)
    x, y = _data()
    frozen = FrozenModel(model, ParamLayout.of(model))
    loss, grads = per_sample_grads(frozen, x, y)
    flat = torch.cat([grads[n].flatten(1) for n in frozen.layout.names], 1).double().numpy()
    ref_loss, ref = _naive_grads(model, x, y)
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    assert model.training, "the training model's mode was not restored"


@pytest.mark.parametrize("norm", ["bn", "none"])
def test_scores_reduce_the_naive_gradients(norm):
    """|g_i|^2, <g_i, G>, cos, projection and the CountSketch of each image, chunked, vs numpy."""
    model = _model(norm)
    x, y = _data(10)
    frozen = FrozenModel(model, ParamLayout.of(model))
    _, ref = _naive_grads(model, x, y)
    full = torch.from_numpy(ref[:4].mean(0) + 0.01)  # any vector will do as G
    sk = CountSketch(frozen.layout.size, 64, torch.device("cpu"), seed=3)
    chunks = [(x[i:i + 3], y[i:i + 3]) for i in range(0, 10, 3)]  # uneven last chunk
    s = score_samples(frozen, chunks, full, sk)
    g = full.numpy()
    np.testing.assert_allclose(s.sq_norm, (ref ** 2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(s.dot, ref @ g, rtol=1e-4, atol=1e-6 * np.abs(ref @ g).max())
    cos = ref @ g / (np.linalg.norm(ref, axis=1) * np.linalg.norm(g))
    np.testing.assert_allclose(s.align(float(np.linalg.norm(g))), cos, atol=1e-5)
    np.testing.assert_allclose(s.proj(float(np.linalg.norm(g))), ref @ g / np.linalg.norm(g), rtol=1e-4, atol=1e-7)
    naive_sketch = np.stack([sk(torch.from_numpy(r).float()).numpy() for r in ref])
    np.testing.assert_allclose(s.sketch.numpy(), naive_sketch, rtol=1e-4, atol=1e-5 * np.abs(naive_sketch).max())


def test_chunk_size_follows_the_memory_bound():
    assert chunk_size(1_000_000, 12_000_000) == 1  # 12 bytes per parameter per image
    assert chunk_size(1_000, 120_000) == 10
    assert chunk_size(10 ** 9, 1) == 1  # never zero


def test_stratify_takes_every_kth_position():
    index = np.arange(100, 123)  # 23 images, batches of 5: K = 4, 3 left over
    out = stratify(index, 5)
    for k in range(4):
        assert out[k * 5:(k + 1) * 5].tolist() == [100 + k + j * 4 for j in range(5)]
    assert sorted(out.tolist()) == index.tolist() and out[20:].tolist() == [120, 121, 122]
    np.testing.assert_allclose(batch_means(np.arange(123.0), out, 5), [108 + k for k in range(4)])


def _brute_greedy(g: np.ndarray, t: np.ndarray, m: int, k: int) -> list[int]:
    """The greedy by definition: each pick minimises |mean of the batch so far - t| directly."""
    free, out = list(range(len(g))), []
    for _ in range(k):
        batch: list[int] = []
        for _ in range(m):
            best = min(free, key=lambda i: np.linalg.norm(g[batch + [i]].mean(0) - t))
            batch.append(best)
            free.remove(best)
        out += batch
    return out + free


def test_greedy_match_is_the_greedy_and_beats_random_batches():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((43, 6)) + 0.3
    t = g.mean(0)
    index, resid = greedy_match(torch.from_numpy(g), torch.from_numpy(t), 5, 8)
    assert index.tolist() == _brute_greedy(g.astype(np.float32), t.astype(np.float32), 5, 8)
    np.testing.assert_allclose(resid, [np.linalg.norm(g[index[i * 5:(i + 1) * 5]].mean(0) - t) for i in range(8)],
                               rtol=1e-5)
    rand = [np.linalg.norm(g[rng.permutation(43)[:5]].mean(0) - t) for _ in range(200)]
    assert resid[:4].mean() < 0.5 * np.mean(rand)


def test_gradient_probe_orders_by_the_naive_scores():
    """``align``'s contiguous and stratified batches at theta_e: the argsort of naive cosines."""
    from gradlab.data.datasets import BatchLoader, ImageSet

    model = _model("none")
    x, y = _data(24)
    data = ImageSet("t", (x * 40 + 128).clamp(0, 255).to(torch.uint8), y, tuple(str(i) for i in range(10)))
    loader = BatchLoader(data, torch.device("cpu"), 6)
    scorer = SampleScorer(loader, max_bytes=1 << 20)
    frozen = FrozenModel(model, ParamLayout.of(model))
    xs, ys = loader.get(torch.arange(24))
    _, ref = _naive_grads(model, xs, ys)
    full = torch.from_numpy(ref.mean(0))
    cos = ref @ full.numpy() / (np.linalg.norm(ref, axis=1) * np.linalg.norm(full.numpy()))
    for cut in ("contiguous", "stratified"):
        p = GradientProbe("align", cut, scorer)
        p.prepare(frozen, full)
        ranked = p.index.reshape(4, 6).T.reshape(-1) if cut == "stratified" else p.index  # undo the cut (K = 4, m = 6)
        _assert_sorted_by(ranked, cos)
        assert p.index.tolist() == (stratify(ranked, 6) if cut == "stratified" else ranked).tolist()
        np.testing.assert_allclose(p.batch_score, batch_means(cos, p.index, 6), atol=1e-5)
        got = list(p.batches([1]))[0][1]
        assert got.tolist() == ys[p.index[6:12]].tolist()


def _assert_sorted_by(index: np.ndarray, key: np.ndarray, tol: float = 1e-6) -> None:
    """``index`` is a permutation that sorts ``key`` ascending (up to ``tol`` between neighbours)."""
    assert sorted(index.tolist()) == list(range(len(key)))
    assert np.all(np.diff(key[index]) >= -tol * max(1.0, np.abs(key).max())), np.diff(key[index]).min()


def test_tracked_gradient_orders_match_autograd_at_theta_e(tmp_path):
    """A user's loop with gradient probes: every epoch's stored order is the argsort of naive
    per-sample scores at theta_e, and every stored D is |g_k - G| by plain autograd, where
    G is the random probe's full gradient (train mode; no norm layer, so train = eval)."""
    import gradlab
    from gradlab.data.datasets import ImageSet

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="smallcnn", norm="none"))
    x, y = _data(48, seed=4)
    data = ImageSet("t", (x * 40 + 128).clamp(0, 255).to(torch.uint8), y, tuple(str(i) for i in range(10)))
    probes = {"random": gradlab.orders.batches(data, "random", 8)}
    probes.update(gradlab.orders.gradient_batches(data, ["loss", "align", "match"], 8,
                                                  batchings=["contiguous", "stratified"]))
    assert sorted(probes) == ["align", "align@strat", "loss", "loss@strat", "match", "random"]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    snaps = []
    with gradlab.Tracker(model, tmp_path / "g.h5", probes=probes, per_layer=False, param_stats="off") as tr:
        for e in range(2):
            tr.epoch_start()
            snaps.append(copy.deepcopy(model))
            for k in range(6):
                xb, yb = probes["random"].loader.get(torch.arange(k * 8, k * 8 + 8))
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
            tr.epoch_end(lr=0.05)
    run = gradlab.open_run(tmp_path / "g.h5")
    loader = probes["random"].loader
    xs, ys = loader.get(torch.arange(48))
    for e, snap in enumerate(snaps):
        losses, ref = _naive_grads(snap, xs, ys)
        rnd = run.order_index("random", e)
        full = np.mean([ref[rnd[k * 8:(k + 1) * 8]].mean(0) for k in range(6)], axis=0)
        cos = ref @ full / (np.linalg.norm(ref, axis=1) * np.linalg.norm(full))
        # sorted by the naive keys (near-ties may swap with float32 summation order: compare keys, not indices)
        _assert_sorted_by(run.order_index("align", e), cos)
        strat = run.order_index("loss@strat", e)
        _assert_sorted_by(strat.reshape(6, 8).T.reshape(-1), losses)  # undo the cut: batch k = positions k + 6j
        for p in ("align", "align@strat", "match"):
            idx = run.order_index(p, e)
            d = [np.linalg.norm(ref[idx[k * 8:(k + 1) * 8]].mean(0) - full) for k in range(6)]
            np.testing.assert_allclose(run.distance_matrix(p)[e], d, rtol=1e-4)
    assert run.f["probes/align"].attrs["score_mode"].startswith("per-sample gradients")
    assert run.batch_score_matrix("align").shape == (2, 6) and run.f["probes/align/index"].shape == (2, 48)
    np.testing.assert_allclose(run.batch_scores("align"), run.batch_score_matrix("align").mean(0))
    run.close()


def test_scorer_recomputes_at_every_new_theta_e():
    """The scoring pass is shared within an epoch and redone at the next theta_e, even when the
    new snapshot is allocated where the freed one was (a memo keyed by id() returned stale scores)."""
    from gradlab.data.datasets import BatchLoader, ImageSet

    model = _model("none")
    x, y = _data(8)
    data = ImageSet("t", (x * 40 + 128).clamp(0, 255).to(torch.uint8), y, tuple(str(i) for i in range(10)))
    scorer = SampleScorer(BatchLoader(data, torch.device("cpu"), 4))
    layout = ParamLayout.of(model)
    frozen = FrozenModel(model, layout)
    first = scorer.scores(frozen, None)
    assert scorer.scores(frozen, None) is first  # one pass per theta_e
    for _ in range(3):
        del frozen
        with torch.no_grad():
            next(model.parameters()).mul_(1.5)
        frozen = FrozenModel(model, layout)
        again = scorer.scores(frozen, None)
        assert not np.allclose(again.loss, first.loss)
        first = again
