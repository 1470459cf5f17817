"""Cost of the per-sample scoring pass of the gradient-informed orders, side by side in one process.

The scoring pass (``gradlab.track.persample``: vmap over grad, chunked, each per-sample gradient
reduced to its loss, |g_i|^2, <g_i, G> and a CountSketch at once) is compared with a plain probe
pass over the same images (``gradlab.track.probe.probe_pass``: one mean-loss gradient per batch
into the memory store, then D). Runs alternate (probe, score, probe, ...) so drift in machine
speed hits both (after a warm-up: vmap's first call traces the model); the ratio of medians
is printed, and the greedy ``match`` on the pass's sketches. Then, for several chunk bounds
(``track.per_sample_mb``), the peak RSS during a scoring pass above the RSS just before it,
each in a fresh subprocess, sampled from /proc every 5 ms.

    nice -n 10 python benchmarks/per_sample_cost.py                     # smallcnn + resnet18, ~3 min idle
    python benchmarks/per_sample_cost.py --models smallcnn --images 4096 --mbs 16 64 256 1024
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

from _common import conditions, setup, sync, timer
from gradlab.data.orders import Order, OrderBatches
from gradlab.track.match import greedy_match
from gradlab.track.persample import chunk_size, score_samples
from gradlab.track.probe import FrozenModel, probe_pass
from gradlab.track.sketch import CountSketch
from gradlab.track.stores import make_store


def _chunks(loader, size: int):
    n = len(loader.data)
    for lo in range(0, n, size):
        yield loader.get(torch.arange(lo, min(n, lo + size)))


def timings(model_name: str, images: int, batch_size: int, reps: int, mb: int, sketch_dim: int) -> None:
    _, device, loader, model, layout = setup(model_name, images, batch_size, "auto")
    order = Order("random", torch.randperm(images).numpy(), torch.arange(images // batch_size).double().numpy(), "")
    probe = OrderBatches(order, loader)
    frozen = FrozenModel(model, layout)
    full = torch.randn(layout.size, dtype=torch.float64, device=device)
    sk = CountSketch(layout.size, sketch_dim, device)
    size = chunk_size(layout.size, mb << 20)
    score_samples(frozen, _chunks(loader, 8), full, sk)  # warm-up: vmap's first call traces the model (~2 s)
    t_probe, t_score = [], []
    for _ in range(reps):
        t = timer()
        probe_pass(frozen, probe.batches(), probe.num_batches, make_store("memory", "float32"), ["l2", "cosine"], True)
        sync(device)
        t_probe.append(timer() - t)
        t = timer()
        s = score_samples(frozen, _chunks(loader, size), full, sk)
        sync(device)
        t_score.append(timer() - t)
    t = timer()
    greedy_match(s.sketch, sk.rows(full.float()[None])[0], batch_size, images // batch_size)
    t_match = timer() - t
    p, q = statistics.median(t_probe), statistics.median(t_score)
    print(f"{model_name:9s} P={layout.size:>10,} N={images} chunk={size:>4} images ({mb} MB): probe pass {p:6.2f} s, "
          f"scoring pass {q:6.2f} s -> score/probe {q / p:5.2f}; greedy match (d={sketch_dim}) {t_match:5.2f} s "
          f"= {t_match / p:4.2f} probe passes", flush=True)


def _rss_mib() -> float:
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_child(model_name: str, images: int, mb: int) -> None:
    """Peak RSS (MiB) during one scoring pass above the RSS just before it, sampled every 5 ms
    (ru_maxrss would report the data set-up's peak instead); prints JSON (subprocess)."""
    _, device, loader, model, layout = setup(model_name, images, 128, "cpu")
    frozen = FrozenModel(model, layout)
    full = torch.randn(layout.size, dtype=torch.float64)
    score_samples(frozen, _chunks(loader, 2), full, None)  # warm-up outside the measurement
    before, peak, done = _rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.005)

    th = threading.Thread(target=sample)
    th.start()
    score_samples(frozen, _chunks(loader, chunk_size(layout.size, mb << 20)), full, None)
    done.set()
    th.join()
    print(json.dumps({"before": before, "peak": peak[0], "chunk": chunk_size(layout.size, mb << 20)}))


def rss_table(model_name: str, images: int, mbs: list[int]) -> None:
    for mb in mbs:
        out = subprocess.run([sys.executable, __file__, "--rss-child", model_name, str(images), str(mb)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"  {model_name:9s} per_sample_mb {mb:>5}: chunk {r['chunk']:>5} images, peak RSS "
              f"+{r['peak'] - r['before']:7.1f} MiB above {r['before']:.0f} MiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smallcnn", "resnet18"])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mb", type=int, default=256, help="track.per_sample_mb of the timed passes")
    ap.add_argument("--mbs", type=int, nargs="+", default=[16, 64, 256, 1024], help="chunk bounds of the RSS table")
    ap.add_argument("--sketch-dim", type=int, default=256)
    ap.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_child:
        rss_child(a.rss_child[0], int(a.rss_child[1]), int(a.rss_child[2]))
        return
    print(f"per-sample scoring vs a plain probe pass; {conditions()}")
    for m in a.models:
        timings(m, a.images, a.batch_size, a.reps, a.mb, a.sketch_dim)
    print("peak memory of a scoring pass by chunk bound (fresh process each):")
    for m in a.models:
        rss_table(m, min(a.images, 512), a.mbs)
    print(f"done; {conditions()}")


if __name__ == "__main__":
    main()
