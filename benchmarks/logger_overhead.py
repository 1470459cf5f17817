"""Tracked/plain epoch time with and without loggers attached, side by side in one process.

Three modes alternate (plain, tracked, tracked + loggers, plain, +loggers, tracked, ...: the two
tracked modes swap places every rep) so drift in machine speed and position hit each alike: ``plain`` is one SGD pass; ``tracked`` is a user's loop with ``gradlab.Tracker``
(memory store, per-layer D, param_stats "epoch"); ``+loggers`` is an epoch of the same tracker
with its ``TensorBoardLogger`` and ``MLflowLogger`` (a local file store) switched on. Printed: the ratio of
medians tracked/plain and tracked+loggers/plain, for wall and CPU time, and the machine load; then
each logger's ``log_epoch`` timed on its own (the run's last epoch of values, 20 calls), as a
fraction of a plain epoch: on a busy machine the epoch ratios scatter by more than the loggers cost.

    MLFLOW_ALLOW_FILE_STORE=true nice -n 10 python benchmarks/logger_overhead.py --reps 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import conditions, setup, sync, timer
from gradlab.data.orders import Order, OrderBatches
from gradlab.loggers import MLflowLogger, TensorBoardLogger
from gradlab.track.tracker import Tracker
from gradlab.train.loop import train_epoch


def measure(model_name: str, images: int, batch_size: int, reps: int, scratch: Path, aa: bool = False
            ) -> dict[str, list]:
    cfg, device, loader, model, layout = setup(model_name, images, batch_size, "auto", "none", False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    order = torch.arange(loader.batch_size * len(loader))
    probe = OrderBatches(Order("random", order.numpy(), np.arange(len(loader), dtype=np.float64), "batch"), loader)
    loggers = [] if aa else [TensorBoardLogger(scratch / "tb"), MLflowLogger(f"file://{scratch / 'mlruns'}", "overhead")]
    # one tracker for both modes, its loggers switched on for "+loggers" epochs only: two trackers
    # differ by more than their loggers (an A/A run with two trackers and no loggers gave 1.33)
    tracker = Tracker(model, scratch / "t.h5", {"random": probe}, overwrite=True, loggers=loggers)

    def plain() -> tuple[float, float]:
        sync(device); t, c = timer(), time.process_time()
        train_epoch(model, opt, loader, order, gen)
        sync(device); return timer() - t, time.process_time() - c

    def tracked(mode: str) -> tuple[float, float]:
        tracker.loggers = loggers if mode == "+loggers" else []
        sync(device); t, c = timer(), time.process_time()
        tracker.epoch_start()
        train_epoch(model, opt, loader, order, gen)
        tracker.epoch_end(lr=0.01)
        sync(device); return timer() - t, time.process_time() - c

    tracked("tracked"), tracked("+loggers"), plain()  # warm-up: allocator, kernels, the loggers' first files
    out: dict[str, list] = {"plain": [], "tracked": [], "+loggers": []}
    for rep in range(reps):
        out["plain"].append(plain())
        for mode in ("tracked", "+loggers")[:: 1 if rep % 2 == 0 else -1]:  # each goes first every other rep
            out[mode].append(tracked(mode))
    tracker.loggers = loggers
    tracker.close()
    out["calls"] = call_cost(scratch, tracker.layout.names, tracker.out)
    return out


def call_cost(scratch: Path, layers: tuple[str, ...], run_path: Path, calls: int = 20) -> dict[str, tuple]:
    """Seconds (wall, cpu) of one ``log_epoch`` call per logger, on the run's own last epoch of values:
    the loggers' whole cost, measured apart from the epochs (insensitive to how busy the machine is)."""
    from gradlab.runfile.epochlog import epoch_rows, epoch_values
    from gradlab.runfile.reader import open_run

    with open_run(run_path) as run:
        values = epoch_values(epoch_rows(run, run.epochs_done - 1), layers)
    out = {}
    for lg in (TensorBoardLogger(scratch / "tb-calls"), MLflowLogger(f"file://{scratch / 'mlruns'}", "calls")):
        lg.log_epoch(0, values)
        t, c = timer(), time.process_time()
        for e in range(1, calls + 1):
            lg.log_epoch(e, values)
        out[type(lg).__name__] = ((timer() - t) / calls, (time.process_time() - c) / calls, len(values))
        lg.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smallcnn"])
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--aa", action="store_true", help="A/A: no loggers in either mode, to see the noise of the ratio")
    a = ap.parse_args()
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # this script's own scratch store
    print(f"tracked/plain epoch with loggers{' (A/A: none attached)' if a.aa else ''}: {conditions()}, "
          f"median of {a.reps}")
    print(f"{'model':<10} {'images':>6} {'clock':>5} {'plain s':>8} {'tracked':>8} {'+loggers':>9} {'ratio':>6}"
          "   (each over plain; ratio = +loggers / tracked)")
    for name in a.models:
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(name, a.images, a.batch_size, a.reps, Path(tmp), a.aa)
        for i, clock in enumerate(("wall", "cpu")):
            mp, mt, ml = (statistics.median(x[i] for x in r[m]) for m in ("plain", "tracked", "+loggers"))
            print(f"{name:<10} {a.images:>6} {clock:>5} {mp:8.2f} {mt / mp:8.3f} {ml / mp:9.3f} {ml / mt:6.3f}",
                  flush=True)
        for logger, (wall, cpu, n) in r["calls"].items():
            mp = statistics.median(x[0] for x in r["plain"])
            print(f"{name:<10} {logger} log_epoch of {n} values: {wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms cpu "
                  f"= {wall / mp:.4f} of a plain epoch", flush=True)
    print(f"({conditions()} at the end)")


if __name__ == "__main__":
    main()
