"""Peak resident memory of one probe pass vs the number of batches K, per gradient store.

Each (store, K) runs in a fresh subprocess (``ru_maxrss`` is a lifetime peak) that builds
the model and K batches, notes its RSS, runs one probe pass (K forward/backward at
theta_e, the store, the distance pass) and reports its peak RSS. ``memory`` grows by
K * P * 4 bytes; ``disk`` (bounded writer queue + fixed-size read chunks), ``recompute``
(O(P)) and ``sketch`` (O(K d)) should stay flat. Tiny batches keep the compute small; the
gradient size P is what matters (resnet18: 11.2 M parameters, 44.7 MB per gradient).

    nice -n 10 python benchmarks/rss_vs_batches.py              # ~1.5 min idle
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
from gradlab.registry import STORES

MODES = list(STORES)


def child(mode: str, k: int, model: str, batch_size: int, scratch: str) -> None:
    import torch

    from _common import peak_rss_mib, setup
    from gradlab.track.stores import make_store
    from gradlab.track.probe import FrozenModel, probe_pass

    torch.set_num_threads(1)
    cfg, device, loader, net, layout = setup(model, k * batch_size, batch_size)
    frozen = FrozenModel(net, layout)
    order = torch.arange(k * batch_size)
    base = peak_rss_mib()
    store = make_store(mode, "float32", sketch_dim=8192, scratch_dir=scratch)
    probe_pass(frozen, loader.batches(order), k, store, ["l2", "cosine"], store.exact,
               replay=lambda: loader.batches(order))
    print(json.dumps({"base": base, "peak": peak_rss_mib(), "P": layout.size}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--ks", type=int, nargs="+", default=[4, 16, 32])
    ap.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--scratch", default=tempfile.gettempdir())
    ap.add_argument("--child", nargs=2, metavar=("MODE", "K"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), a.model, a.batch_size, a.scratch)
        return
    from _common import conditions

    print(f"peak RSS (MiB) of one probe pass, {a.model}, batch {a.batch_size}, fresh process per cell; {conditions()}")
    print(f"{'store':<10} " + " ".join(f"{'K=' + str(k):>16}" for k in a.ks) + "   (peak, growth over the pre-pass peak)")
    size = None
    for mode in a.modes:
        cells = []
        for k in a.ks:
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(k), "--model", a.model,
                                  "--batch-size", str(a.batch_size), "--scratch", a.scratch],
                                 capture_output=True, text=True, cwd=Path(__file__).parent)
            if out.returncode:
                raise SystemExit(f"{mode} K={k} failed:\n{out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            size = r["P"]
            cells.append(f"{r['peak']:8.0f} (+{r['peak'] - r['base']:5.0f})")
        print(f"{mode:<10} " + " ".join(f"{c:>16}" for c in cells), flush=True)
    print(f"(one float32 gradient = {size * 4 / 2**20:.1f} MiB; memory should grow by that per batch)")


if __name__ == "__main__":
    main()
