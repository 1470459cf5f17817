"""What ``match`` loses by matching sketches instead of whole per-sample gradients.

``match`` builds batches greedily so that each batch's mean per-sample gradient approaches the
full gradient (``gradlab.track.match``), on a d-bucket CountSketch of every image's gradient.
This script builds the batches from several representations of the same per-sample gradients
at one theta (a briefly trained network, eval mode) and measures each batch's *true* distance
D_k = |mean_{i in k} g_i - G| (one autograd pass per batch, eval mode; G the eval-mode mean of
all per-sample gradients), in units of the mean D of random batches:

- ``exact``: the whole per-sample gradients (only where N x P fits in memory);
- ``countsketch``: every coordinate hashed independently (the sketch before the fast path);
- ``tensorsketch``: each weight hashed as a tensor product (what the scorer uses now, so the
  fast path sketches Gram-form layers from their factors);
- ``last layer``: the exact gradient of the last Linear layer, as GradMatch uses.

    nice -n 10 python benchmarks/match_sketch_accuracy.py                  # smallcnn and resnet18, 512 images
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import conditions, setup, timer
from gradlab.track.fastsample import make_plan, score_samples_fast
from gradlab.track.match import greedy_match
from gradlab.track.persample import eval_mode, per_sample_grads
from gradlab.track.probe import FrozenModel
from gradlab.track.sketch import CountSketch


def _train(model: nn.Module, loader, epochs: int, lr: float) -> None:
    """A few plain SGD epochs, so that the gradients are not those of the initialisation."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    n = len(loader.data)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n).split(loader.batch_size):
            x, y = loader.get(idx)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()


def _eval_grad(frozen: FrozenModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with eval_mode(frozen.model):
        return frozen.grad(x, y).double()


class Truth:
    """The true D of any batching: eval-mode batch gradients against their mean over all images."""

    def __init__(self, frozen: FrozenModel, loader, m: int):
        self.frozen, self.loader, self.m, n = frozen, loader, m, len(loader.data)
        self.k = n // m
        parts = [(len(i), _eval_grad(frozen, *loader.get(i))) for i in torch.arange(n).split(128)]
        self.full = sum(c * g for c, g in parts) / n

    def d(self, index: np.ndarray) -> np.ndarray:
        idx = torch.from_numpy(np.asarray(index[:self.k * self.m]))
        return np.array([float((_eval_grad(self.frozen, *self.loader.get(b)) - self.full).norm())
                         for b in idx.split(self.m)])


def _sketched(frozen, plan, loader, truth: Truth, sketch: CountSketch) -> np.ndarray:
    n = len(loader.data)
    chunks = (loader.get(i) for i in torch.arange(n).split(loader.batch_size))
    s = score_samples_fast(frozen, plan, chunks, truth.full, sketch)
    return greedy_match(s.sketch, sketch.rows(truth.full.float()[None])[0], truth.m, truth.k)[0]


def _rows(frozen, loader, names) -> torch.Tensor:
    """Exact per-sample gradients of the tensors ``names`` [N, numel] (vmap, chunks of 32)."""
    out = []
    for i in torch.arange(len(loader.data)).split(32):
        _, g = per_sample_grads(frozen, *loader.get(i), names)
        out.append(torch.cat([g[n].flatten(1) for n in names], 1).float())
    return torch.cat(out)


def run(model_name: str, images: int, m: int, seeds: int, epochs: int, dim: int, exact_mb: int) -> None:
    _, device, loader, model, layout = setup(model_name, images, 64, "cpu")
    _train(model, loader, epochs, 0.05)
    frozen = FrozenModel(model, layout)
    truth = Truth(frozen, loader, m)
    plan = make_plan(frozen, *loader.get(torch.arange(2)))
    rng = np.random.default_rng(0)
    rand = np.mean([truth.d(rng.permutation(images)).mean() for _ in range(5)])
    rows: list[tuple[str, list[np.ndarray], float]] = []
    half = truth.k // 2

    def add(label, build):
        t = timer()
        ds = [truth.d(build(s)) for s in range(seeds)]
        rows.append((label, ds, (timer() - t) / seeds))

    add(f"countsketch d={dim}", lambda s: _sketched(frozen, plan, loader, truth, CountSketch(
        layout.size, dim, device, seed=100 + s)))
    add(f"tensorsketch d={dim}", lambda s: _sketched(frozen, plan, loader, truth, CountSketch(
        layout.size, dim, device, seed=100 + s, shapes=layout.shapes)))
    last = [n for n, mod in model.named_modules() if isinstance(mod, nn.Linear)][-1]
    names = [f"{last}.{p}" for p, _ in dict(model.named_modules())[last].named_parameters()]
    offs = dict(zip(layout.names, zip(layout.offsets[:-1], layout.offsets[1:])))
    target = torch.cat([truth.full[offs[n][0]:offs[n][1]] for n in names]).float()
    g_last = _rows(frozen, loader, names)
    add(f"last layer d={g_last.shape[1]}", lambda s: greedy_match(g_last, target, m, truth.k)[0])
    if images * layout.size * 4 <= exact_mb << 20:
        g_all = _rows(frozen, loader, list(layout.names))
        add(f"exact d={layout.size}", lambda s: greedy_match(g_all, truth.full.float(), m, truth.k)[0])
    print(f"{model_name}: P={layout.size:,}, N={images}, {truth.k} batches of {m}, {epochs} training epoch(s); "
          f"random batches' mean D = {rand:.4g}; {conditions()}")
    print(f"  {'gradients matched':28s} {'mean D / random':>16s} {'first half':>11s} {'last half':>10s}  "
          f"(over {seeds} sketch seed(s))  build s")
    for label, ds, secs in rows:
        r = [d.mean() / rand for d in ds]
        f = [d[:half].mean() / rand for d in ds]
        b = [d[half:].mean() / rand for d in ds]
        spread = f" ± {statistics.stdev(r):.3f}" if len(r) > 1 else ""
        print(f"  {label:28s} {np.mean(r):10.3f}{spread:7s} {np.mean(f):10.3f} {np.mean(b):10.3f}  {secs:8.1f}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smallcnn", "resnet18"])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32, help="images per matched batch")
    ap.add_argument("--seeds", type=int, default=3, help="sketch seeds")
    ap.add_argument("--epochs", type=int, default=1, help="SGD epochs before measuring")
    ap.add_argument("--dim", type=int, default=256, help="sketch buckets (track.match_dim)")
    ap.add_argument("--exact-mb", type=int, default=1024, help="largest N x P float32 held for the exact match")
    a = ap.parse_args()
    for m in a.models:
        run(m, a.images, a.batch_size, a.seeds, a.epochs, a.dim, a.exact_mb)


if __name__ == "__main__":
    main()
