"""Cost of the per-sample scoring pass, both paths side by side in one process, against a probe pass.

The scoring pass of the gradient-informed orders (loss, |g_i|^2, <g_i, G> and ``match``'s
CountSketch of every image) by the fast path (``gradlab.track.fastsample``: per-layer factors,
one forward and backward per chunk) and by the vmap reference (``gradlab.track.persample``:
vmap over grad, chunked) is compared with a plain probe pass over the same images
(``gradlab.track.probe.probe_pass``: one mean-loss gradient per batch into the memory store,
then D). Runs alternate (probe, vmap, fast, probe, ...) after a warm-up, so drift in machine
speed hits all of them; medians are printed (the fast path also without the sketch, and
without G: loss and |g_i|^2 only), with both paths' chunk sizes at ``--mb`` and the
largest relative difference between their scores. ``--jvp`` also times loss and <g_i, G> by
forward-mode AD (``torch.func.jvp`` in the direction G), the alternative the fast path does
not use. Then the peak RSS of each pass over one probe batch's images above the RSS just
before it, each in a fresh subprocess, sampled from /proc every 5 ms. ``uptime``'s load is
printed before and after.

    nice -n 10 python benchmarks/per_sample_cost.py                 # smallcnn, resnet18 (256), dpn92 (64)
    python benchmarks/per_sample_cost.py --models smallcnn:1024 --mbs 16 64 256
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

import numpy as np
import torch
from torch.func import functional_call, jvp

from _common import conditions, setup, sync, timer
from gradlab.data.orders import Order, OrderBatches
from gradlab.track.fastsample import make_plan, per_sample_loss, score_samples_fast
from gradlab.track.persample import chunk_size, eval_mode, score_samples
from gradlab.track.probe import FrozenModel, probe_pass
from gradlab.track.sketch import CountSketch
from gradlab.track.stores import make_store


def _chunks(loader, size: int):
    n = len(loader.data)
    for lo in range(0, n, size):
        yield loader.get(torch.arange(lo, min(n, lo + size)))


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


class Bench:
    """One model's data, theta_e, G, sketch and both paths' chunk sizes at ``mb``."""

    def __init__(self, model_name: str, images: int, batch_size: int, mb: int, sketch_dim: int, device: str):
        self.name, self.images, self.mb = model_name, images, mb << 20
        self.batch_size = min(batch_size, images)
        _, self.device, self.loader, model, layout = setup(model_name, images, self.batch_size, device)
        order = Order("random", torch.randperm(images).numpy(),
                      torch.arange(images // self.batch_size).double().numpy(), "")
        self.probe = OrderBatches(order, self.loader)
        self.frozen = FrozenModel(model, layout)
        self.full = torch.randn(layout.size, dtype=torch.float64, device=self.device)
        self.sk = CountSketch(layout.size, sketch_dim, self.device, shapes=layout.shapes)  # what the scorer uses
        x, y = self.loader.get(torch.arange(2))
        self.plan = make_plan(self.frozen, x, y)
        self.vmap_chunk = chunk_size(layout.size, self.mb)
        self.fast_chunk = self.plan.chunk_size(self.mb, self.batch_size)

    def probe_pass(self):
        f = self.frozen
        return probe_pass(f, self.probe.batches(), self.probe.num_batches, make_store("memory", "float32"),
                          ["l2", "cosine"], True)

    def vmap(self, sketch: bool = True):
        return score_samples(self.frozen, _chunks(self.loader, self.vmap_chunk), self.full, self.sk if sketch else None)

    def fast(self, sketch: bool = True, full: bool = True):
        return score_samples_fast(self.frozen, self.plan, _chunks(self.loader, self.fast_chunk),
                                  self.full if full else None, self.sk if sketch else None, self.mb)

    def jvp(self):
        """Loss and <g_i, G> of every image by forward-mode AD, in the fast path's chunks."""
        f = self.frozen
        theta = {n: p.detach() for n, p in f.params.items()}
        tangent = {n: t.to(p.dtype) for (n, p), t in zip(theta.items(), f.layout.unflatten(self.full).values())}
        fixed = {**f.consts, **f.buffers}
        with eval_mode(f.model), torch.no_grad():
            for x, y in _chunks(self.loader, self.fast_chunk):
                loss_of = lambda p: per_sample_loss(f, functional_call(f.model, {**p, **fixed}, (x,)), y)
                jvp(loss_of, (theta,), (tangent,))

    def timed(self, fn) -> float:
        t = timer()
        fn()
        sync(self.device)
        return timer() - t


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def timings(b: Bench, reps: int, with_jvp: bool) -> None:
    s = b.plan.specs.values()
    print(f"{b.name}: P={b.frozen.layout.size:,} N={b.images} probe batch {b.batch_size}; chunk at "
          f"{b.mb >> 20} MB: vmap {b.vmap_chunk}, fast {b.fast_chunk} (per-image work {b.plan.state_bytes / 2**20:.2f} "
          f"MB; {sum(x.method == 'ghost' for x in s)} Gram-form, {sum(x.kind in ('linear', 'conv') for x in s)} "
          f"linear/conv layers; fallback {len(b.plan.fallback)} tensors); {_load()}", flush=True)
    two = [b.loader.get(torch.arange(2))]
    score_samples(b.frozen, two, b.full, b.sk)  # warm-up: vmap's first call traces the model
    score_samples_fast(b.frozen, b.plan, two, b.full, b.sk)
    t: dict[str, list[float]] = {"probe": [], "vmap": [], "fast": [], "fast, no sketch": [], "fast, norms only": [],
                                 "jvp": []}
    out = {}
    keep = lambda key, fn: (lambda: out.__setitem__(key, fn()))
    for _ in range(reps):
        t["probe"].append(b.timed(b.probe_pass))
        t["vmap"].append(b.timed(keep("vmap", b.vmap)))
        t["fast"].append(b.timed(keep("fast", b.fast)))
        t["fast, no sketch"].append(b.timed(lambda: b.fast(sketch=False)))
        t["fast, norms only"].append(b.timed(lambda: b.fast(sketch=False, full=False)))  # loss and |g_i|^2
        if with_jvp:
            t["jvp"].append(b.timed(b.jvp))
    p = statistics.median(t["probe"])
    line = "  ".join(f"{k} {statistics.median(v):7.2f} s ({statistics.median(v) / p:4.2f}x)"
                     for k, v in t.items() if v)
    v, f = out["vmap"], out["fast"]
    print(f"  median of {reps}: {line}", flush=True)
    print(f"  fast vs vmap, max relative difference: loss {_rel(f.loss, v.loss):.1e}, |g_i|^2 "
          f"{_rel(f.sq_norm, v.sq_norm):.1e}, <g_i,G> {_rel(f.dot, v.dot):.1e}, sketch "
          f"{_rel(f.sketch.cpu().numpy(), v.sketch.cpu().numpy()):.1e}; {_load()}", flush=True)


def _rss_mib() -> float:
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_child(model_name: str, images: int, batch_size: int, mb: int, path: str) -> None:
    """Peak RSS (MiB) during one pass (``probe``, ``vmap`` or ``fast``) above the RSS just before it,
    sampled every 5 ms (ru_maxrss would report the data set-up's peak instead); prints JSON."""
    b = Bench(model_name, images, batch_size, mb, 256, "cpu")
    run = {"probe": b.probe_pass, "vmap": b.vmap, "fast": b.fast}[path]
    before, peak, done = _rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.005)

    th = threading.Thread(target=sample)
    th.start()
    run()
    done.set()
    th.join()
    chunk = {"probe": b.batch_size, "vmap": b.vmap_chunk, "fast": b.fast_chunk}[path]
    print(json.dumps({"before": before, "peak": peak[0], "chunk": chunk}))


def rss_table(model_name: str, images: int, batch_size: int, mbs: list[int]) -> None:
    for mb in mbs:
        for path in ("probe", "vmap", "fast"):
            if path == "probe" and mb != mbs[0]:
                continue
            cmd = [sys.executable, __file__, "--rss-child", model_name, str(images), str(batch_size), str(mb), path]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            label = "probe pass" if path == "probe" else f"{path} scoring, per_sample_mb {mb}"
            print(f"  {model_name:9s} {label:32s}: {r['chunk']:>4} images at once, peak RSS "
                  f"+{r['peak'] - r['before']:7.1f} MiB above {r['before']:.0f} MiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smallcnn", "resnet18", "dpn92:64"],
                    help="model or model:images")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--mb", type=int, default=256, help="track.per_sample_mb of the timed passes")
    ap.add_argument("--mbs", type=int, nargs="+", default=[256], help="chunk bounds of the RSS table")
    ap.add_argument("--sketch-dim", type=int, default=256)
    ap.add_argument("--jvp", action="store_true", help="also time loss and <g_i, G> by torch.func.jvp")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--rss-child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_child:
        m, n, bs, mb, path = a.rss_child
        rss_child(m, int(n), int(bs), int(mb), path)
        return
    models = [(m.split(":")[0], int(m.split(":")[1]) if ":" in m else a.images) for m in a.models]
    print(f"per-sample scoring (vmap, fast) vs a plain probe pass; {conditions()}; {_load()}", flush=True)
    for m, n in models:
        timings(Bench(m, n, a.batch_size, a.mb, a.sketch_dim, "auto"), a.reps, a.jvp)
    if not a.no_rss:
        print("peak memory of each pass (fresh process each):", flush=True)
        for m, n in models:
            rss_table(m, min(n, a.batch_size), a.batch_size, a.mbs)  # one probe batch: at most one fast chunk
    print(f"done; {conditions()}; {_load()}")


if __name__ == "__main__":
    main()
