"""Accuracy of the ``sketch`` store against exact D on real training runs.

Trains a model on synthetic data; at each epoch start takes the exact batch gradients at
theta_e (memory store, float32), computes exact D, then the sketch estimate at several
sketch dimensions d and sketch seeds, through the same ``SketchStore`` the runner uses.
Prints, per model and d: the relative error of D (l2) -- median and max over batches,
epochs and seeds --, the max absolute error of the cosine distance, the relative error of
the noise scale, and the Spearman rank correlation between sketched and exact D within
each epoch (the heatmap's row order), worst and mean over epochs and seeds.

    nice -n 10 python benchmarks/sketch_accuracy.py                        # ~2 min idle
    python benchmarks/sketch_accuracy.py --models resnet18 --images 1024 --epochs 3
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import spearmanr

from _common import conditions, setup
from gradlab.track.distances import FullGradient, epoch_stats
from gradlab.track.stores import MemoryStore, SketchStore
from gradlab.train.loop import train_epoch
from gradlab.track.probe import FrozenModel


def run(model_name: str, images: int, batch_size: int, epochs: int, dims: list[int], seeds: int) -> dict:
    cfg, device, loader, model, layout = setup(model_name, images, batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    probe_order = torch.randperm(len(loader.data), generator=torch.Generator().manual_seed(1))
    res = {d: {"rel": [], "cos": [], "noise": [], "rho": []} for d in dims}
    for e in range(epochs):
        frozen = FrozenModel(model, layout)
        train_epoch(model, opt, loader, torch.randperm(len(loader.data), generator=gen), gen)
        k = len(loader)
        mem = MemoryStore("float32")
        mem.begin(k, layout.size, device)
        full = FullGradient(layout.size, device)
        sizes = np.zeros(k, dtype=np.int64)
        for i, (x, y) in enumerate(loader.batches(probe_order)):
            g = frozen.grad(x, y)
            mem.put(i, g)
            full.add(g, len(y))
            sizes[i] = len(y)
        G = full.mean()
        exact = epoch_stats(mem, G, layout, sizes, ["l2", "cosine"], False)
        for d in dims:
            for s in range(seeds):
                sk = SketchStore("float32", sketch_dim=d, sketch_seed=100 * s + 7)
                sk.begin(k, layout.size, device)
                for i in range(k):
                    sk.put(i, mem.grads[i])
                est = epoch_stats(sk, G, layout, sizes, ["l2", "cosine"], False)
                sk.end()
                r = res[d]
                r["rel"].extend(np.abs(est.distance["l2"] / exact.distance["l2"] - 1))
                r["cos"].extend(np.abs(est.distance["cosine"] - exact.distance["cosine"]))
                r["noise"].append(abs(est.noise_scale / exact.noise_scale - 1))
                r["rho"].append(spearmanr(est.distance["l2"], exact.distance["l2"]).statistic)
        mem.end()
        print(f"  {model_name} epoch {e}: K={k}, |G|={exact.full_norm:.4g}, median D={np.median(exact.distance['l2']):.4g}, "
              f"D spread (max/min) {exact.distance['l2'].max() / exact.distance['l2'].min():.3f}, "
              f"noise scale {exact.noise_scale:.4g}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smallcnn", "resnet18"])
    ap.add_argument("--images", type=int, default=2048, help="smallcnn training images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--big-images", type=int, default=512, help="training images for the other models")
    ap.add_argument("--big-batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--dims", type=int, nargs="+", default=[1024, 4096, 8192])
    ap.add_argument("--seeds", type=int, default=3, help="independent sketches per d")
    a = ap.parse_args()
    print(f"sketch accuracy: {conditions()}, {a.epochs} epochs, {a.seeds} sketch seeds per d")
    rows = []
    for name in a.models:
        images, bs = (a.images, a.batch_size) if name == "smallcnn" else (a.big_images, a.big_batch_size)
        res = run(name, images, bs, a.epochs, a.dims, a.seeds)
        for d, r in res.items():
            rows.append((name, d, r))
    print(f"{'model':<10} {'d':>6} {'D rel err median':>17} {'max':>8} {'cos abs err max':>16} "
          f"{'noise scale rel err max':>24} {'Spearman min':>13} {'mean':>7}")
    for name, d, r in rows:
        rel, rho = np.array(r["rel"]), np.array(r["rho"])
        print(f"{name:<10} {d:>6} {np.median(rel):17.2%} {rel.max():8.2%} {max(r['cos']):16.2e} "
              f"{max(r['noise']):24.2%} {rho.min():13.4f} {rho.mean():7.4f}")


if __name__ == "__main__":
    main()
