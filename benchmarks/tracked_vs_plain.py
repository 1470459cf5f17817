"""Tracked epoch / plain epoch time for each gradient store, measured side by side in one process.

A plain epoch is one SGD pass. A tracked epoch is what a user's loop with ``gradlab.Tracker``
does: ``epoch_start`` (theta_e), the same SGD pass, and ``epoch_end``: one probe pass over the
same batches into the gradient store, the distance pass and the run-file rows and commit (full gradient, D in l2 and cosine, per-layer l2 except for ``sketch``,
which estimates whole-model D only). Runs alternate (plain, memory, disk, recompute,
sketch, plain, ...) so drift in machine speed hits every mode; the ratio of medians is
printed, for wall time and for this process's CPU time (user + sys of all its threads:
less sensitive to other processes on a shared machine, but blind to idle waits). The compute floor is about 2.0 (a probe pass costs a forward and backward, like a
training step, minus the optimizer update); ``recompute`` pays a second probe pass (~3.0).

    nice -n 10 python benchmarks/tracked_vs_plain.py                # smallcnn + resnet18, ~3 min idle
    python benchmarks/tracked_vs_plain.py --models dpn92 --big-images 2048 --device cuda --amp bf16 --channels-last
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import conditions, setup, sync, timer
from gradlab.registry import STORES
from gradlab.track.stores import make_store
from gradlab.train.loop import train_epoch
from gradlab.data.orders import Order, OrderBatches
from gradlab.track.probe import FrozenModel, probe_pass
from gradlab.track.tracker import Tracker

MODES = list(STORES)


def measure(model_name: str, images: int, batch_size: int, reps: int, modes: list[str], device_name: str,
            amp: str, channels_last: bool, grad_dtype: str, sketch_dim: int, scratch: str
            ) -> tuple[list[tuple[float, float]], dict[str, list[tuple[float, float]]]]:
    cfg, device, loader, model, layout = setup(model_name, images, batch_size, device_name, amp, channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    order = torch.arange(loader.batch_size * len(loader))

    def plain() -> tuple[float, float]:
        sync(device); t, c = timer(), time.process_time()
        train_epoch(model, opt, loader, order, gen)
        sync(device); return timer() - t, time.process_time() - c

    probe = OrderBatches(Order("probe", order.numpy(), np.arange(len(loader), dtype=np.float64), "batch"), loader)
    trackers = {mode: Tracker(model, Path(scratch) / f"tracked_vs_plain-{mode}.h5", {"probe": probe}, store=mode,
                              per_layer=STORES.load(mode).exact, grad_dtype=grad_dtype, sketch_dim=sketch_dim,
                              scratch_dir=scratch, param_stats="off", overwrite=True) for mode in modes}

    def tracked(mode: str) -> tuple[float, float]:
        """A user's loop with gradlab.Tracker: theta_e, the SGD pass, probe pass + rows + commit."""
        sync(device); t, c = timer(), time.process_time()
        trackers[mode].epoch_start()
        train_epoch(model, opt, loader, order, gen)
        trackers[mode].epoch_end(lr=0.01)
        sync(device); return timer() - t, time.process_time() - c

    warm = order[: 2 * batch_size]  # warm-up: allocator, kernels, one write/read of each store
    train_epoch(model, opt, loader, warm, gen)
    frozen = FrozenModel(model, layout)
    for mode in modes:
        probe_pass(frozen, loader.batches(warm), 2, make_store(mode, grad_dtype, sketch_dim=sketch_dim,
                   scratch_dir=scratch), ["l2"], STORES.load(mode).exact, replay=lambda: loader.batches(warm))
    p: list[tuple[float, float]] = []
    t: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    for _ in range(reps):
        p.append(plain())
        for m in modes:
            t[m].append(tracked(m))
    for tr in trackers.values():
        tr.close()
        tr.out.unlink(missing_ok=True)
    return p, t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smallcnn", "resnet18"])
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    ap.add_argument("--images", type=int, default=2048, help="training images per epoch for smallcnn")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--big-images", type=int, default=384, help="images per epoch for the other (slow) models")
    ap.add_argument("--big-batch-size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--grad-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--sketch-dim", type=int, default=8192)
    ap.add_argument("--scratch", default=tempfile.gettempdir(), help="directory of the disk store's scratch file")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default="none", choices=["none", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    print(f"tracked/plain epoch: {conditions()}, device {a.device}, amp {a.amp}, channels_last {a.channels_last}, "
          f"grad_dtype {a.grad_dtype}, sketch d={a.sketch_dim}, median of {a.reps}")
    print(f"{'model':<10} {'images':>6} {'K':>4} {'clock':>5} {'plain s':>8} "
          + " ".join(f"{m:>10}" for m in a.modes) + "   (tracked/plain ratio)")
    for name in a.models:
        small = name == "smallcnn"
        images, bs = (a.images, a.batch_size) if small else (a.big_images, a.big_batch_size)
        p, t = measure(name, images, bs, a.reps, a.modes, a.device, a.amp, a.channels_last, a.grad_dtype,
                       a.sketch_dim, a.scratch)
        for i, clock in enumerate(("wall", "cpu")):
            mp = statistics.median(x[i] for x in p)
            print(f"{name:<10} {images:>6} {images // bs:>4} {clock:>5} {mp:8.2f} "
                  + " ".join(f"{statistics.median(x[i] for x in t[m]) / mp:10.3f}" for m in a.modes), flush=True)
    print(f"({conditions()} at the end)")


if __name__ == "__main__":
    main()
