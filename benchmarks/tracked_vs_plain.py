"""Tracked epoch / plain epoch time, measured side by side in one process.

A plain epoch is one SGD pass. A tracked epoch is the same SGD pass plus, at the frozen
epoch-start parameters, one probe pass over the same number of batches into the gradient
store, and the distance pass (full gradient, D in l2 and cosine, per-layer l2). The two are
run alternately (plain, tracked, plain, tracked, ...) so drift in machine speed hits both;
the ratio of medians is printed. The compute floor is about 2.0 (a probe pass costs a
forward and backward, like a training step, minus the optimizer update).

    python benchmarks/tracked_vs_plain.py --models smallcnn resnet18 --images 2048
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from gradlab.config import config_from_dict
from gradlab.datasets import BatchLoader, load_split
from gradlab.gradstore import make_store
from gradlab.layout import ParamLayout
from gradlab.models import build_model
from gradlab.runner import resolve_device, train_epoch
from gradlab.tracker import FrozenModel, probe_pass


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model_name: str, images: int, batch_size: int, reps: int, grads: str, device_name: str) -> tuple[float, float]:
    cfg = config_from_dict({"data": {"dataset": "synthetic", "subset": images},
                            "model": {"name": model_name}, "train": {"batch_size": batch_size, "device": device_name},
                            "track": {"grads": grads}})
    device = resolve_device(cfg.train.device)
    torch.manual_seed(0)
    data = load_split(cfg.data, train=True)
    loader = BatchLoader(data, device, batch_size)
    model = build_model(cfg.model).to(device)
    layout = ParamLayout.of(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    order = torch.arange(len(data))

    def plain() -> float:
        sync(device); t = time.perf_counter()
        train_epoch(model, opt, loader, order, gen)
        sync(device); return time.perf_counter() - t

    def tracked() -> float:
        sync(device); t = time.perf_counter()
        frozen = FrozenModel(model, layout)
        train_epoch(model, opt, loader, order, gen)
        probe_pass(frozen, loader.batches(order), len(loader), make_store(grads, "float32"), ["l2", "cosine"], True)
        sync(device); return time.perf_counter() - t

    plain()  # warm-up: allocator, kernels
    tracked()
    p, t = [], []
    for _ in range(reps):
        p.append(plain())
        t.append(tracked())
    return statistics.median(p), statistics.median(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smallcnn", "resnet18"])
    ap.add_argument("--images", type=int, default=2048, help="training images per epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--grads", default="memory")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {resolve_device(a.device)}, "
          f"{a.images} images, batch {a.batch_size}, store {a.grads}, median of {a.reps}")
    print(f"{'model':<10} {'plain s':>9} {'tracked s':>10} {'ratio':>7}")
    for name in a.models:
        images = a.images if name == "smallcnn" else min(a.images, 1024)
        p, t = measure(name, images, a.batch_size, a.reps, a.grads, a.device)
        print(f"{name:<10} {p:9.3f} {t:10.3f} {t / p:7.3f}   ({images} images)")


if __name__ == "__main__":
    main()
