"""What Fletcher-32 checksums cost: raw-gradient write speed and tracked/plain, on vs off.

1. MB/s of ``RunWriter.write_grads`` (the ``keep_grads`` path: K x P float32 rows into the run
   file), with and without the checksum filter, alternating on/off ``--reps`` times.
2. The tracked/plain epoch ratio of a user's loop with ``gradlab.Tracker`` (smallcnn, memory
   store), checksums on vs off, measured side by side in one process.

Checksums are switched by the module constant ``gradlab.runfile.writer.CHECKSUM`` for the
"off" arm only; gradlab always writes them.

    python benchmarks/checksum_cost.py
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import conditions, setup
from gradlab.data.orders import Order, OrderBatches
from gradlab.runfile import writer as writer_mod
from gradlab.track.layout import ParamLayout
from gradlab.track.tracker import Tracker
from gradlab.train.loop import train_epoch

ON, OFF = {"fletcher32": True}, {}


def write_speed(rows: int, size: int, reps: int, folder: Path) -> dict[str, list[float]]:
    grads = torch.randn(rows, size)
    layout = ParamLayout(("w",), ((size,),), ("linear.weight",))
    out: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(reps):
        for arm, ck in (("on", ON), ("off", OFF)):
            writer_mod.CHECKSUM = ck
            w = writer_mod.RunWriter(folder / f"w-{arm}.h5", {}, {}, layout)
            t = time.perf_counter()
            w.write_grads("probes/p/grads/epoch_0", grads)
            w.close("complete")
            out[arm].append(grads.numel() * 4 / 2**20 / (time.perf_counter() - t))
    writer_mod.CHECKSUM = ON
    return out


def tracked_ratio(images: int, batch_size: int, reps: int, folder: Path) -> dict[str, float]:
    cfg, device, loader, model, layout = setup("smallcnn", images, batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    order = torch.arange(loader.batch_size * len(loader))
    probe = OrderBatches(Order("p", order.numpy(), np.arange(len(loader), dtype=np.float64), "batch"), loader)
    trackers = {arm: Tracker(model, folder / f"t-{arm}.h5", {"p": probe}, param_stats="epoch", overwrite=True)
                for arm in ("on", "off")}
    times: dict[str, list[float]] = {"plain": [], "on": [], "off": []}
    for _ in range(reps):
        t = time.perf_counter()
        train_epoch(model, opt, loader, order, gen)
        times["plain"].append(time.perf_counter() - t)
        for arm, ck in (("on", ON), ("off", OFF)):
            writer_mod.CHECKSUM = ck  # datasets are created at the first commit, with or without the filter
            t = time.perf_counter()
            trackers[arm].epoch_start()
            train_epoch(model, opt, loader, order, gen)
            trackers[arm].epoch_end(lr=0.01)
            times[arm].append(time.perf_counter() - t)
    writer_mod.CHECKSUM = ON
    for tr in trackers.values():
        tr.close()
    plain = statistics.median(times["plain"])
    return {arm: statistics.median(v) / plain for arm, v in times.items() if arm != "plain"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--size", type=int, default=4_000_000, help="parameters per gradient row (float32)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--images", type=int, default=2048)
    a = ap.parse_args()
    print(f"checksum cost: {conditions()}")
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        s = write_speed(a.rows, a.size, a.reps, Path(tmp))
        on, off = statistics.median(s["on"]), statistics.median(s["off"])
        print(f"write_grads {a.rows} x {a.size:,} float32: {on:.0f} MB/s with Fletcher-32, {off:.0f} MB/s without "
              f"(ratio {on / off:.3f}; medians of {a.reps})")
        r = tracked_ratio(a.images, 128, a.reps, Path(tmp))
        print(f"tracked/plain, smallcnn {a.images} images: {r['on']:.3f} with checksums, {r['off']:.3f} without")
    print(f"({conditions()} at the end)")


if __name__ == "__main__":
    main()
