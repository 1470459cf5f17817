"""Quickstart wall time alone and beside a busy process, by torch thread count.

On a 2-core machine torch's intra-op threads spin-wait for each other; when another
process holds one core, 2 threads can run several times slower than 1. This script runs
``gradlab run studies/quickstart.toml`` in fresh processes for each setting, alone and next
to a CPU-bound ``while True: pass`` process, and prints wall times and ratios. ``auto`` is
gradlab's default (``train.threads``); it reads the load average at start.

    python benchmarks/threads_under_load.py                 # full quickstart, ~6-12 min
    python benchmarks/threads_under_load.py --epochs 2      # shorter
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def run_quickstart(threads: str, epochs: int, env_extra: dict[str, str]) -> float:
    out = os.path.join(tempfile.mkdtemp(), "q.h5")
    cmd = [sys.executable, "-m", "gradlab", "run", "studies/quickstart.toml", "--out", out, "--quiet",
           "--no-score-cache", "--set", f"train.threads={threads if threads == 'auto' else int(threads)}"
           .replace("=auto", '="auto"'), "--set", f"train.epochs={epochs}", "--set", "output.heatmaps=false"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(env_extra)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    a = ap.parse_args()
    settings = [("1", {}), ("2", {}), ("2", {"OMP_WAIT_POLICY": "PASSIVE"}), ("auto", {})]
    print(f"quickstart ({a.epochs} epochs) wall seconds; load average at start {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} cpus")
    rows = {}
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        if busy:
            time.sleep(65)  # let the 1-minute load average see the busy process (auto reads it)
        try:
            for threads, extra in settings:
                label = f"threads={threads}" + (" OMP_WAIT_POLICY=PASSIVE" if extra else "")
                rows[(busy, label)] = s = run_quickstart(threads, a.epochs, extra)
                print(f"  {'beside a busy process' if busy else 'alone':<22} {label:<32} {s:7.1f} s "
                      f"(load avg {os.getloadavg()[0]:.2f})", flush=True)
        finally:
            if hog:
                hog.kill()
    one = rows[(True, "threads=1")]
    print("ratios beside a busy process, vs threads=1: "
          + ", ".join(f"{k[1]} {v / one:.2f}" for k, v in rows.items() if k[0]))
    print("ratios alone, vs threads=1: " + ", ".join(f"{k[1]} {v / rows[(False, 'threads=1')]:.2f}"
                                                  for k, v in rows.items() if not k[0]))


if __name__ == "__main__":
    main()
