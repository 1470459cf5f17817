"""A/B of one benchmark between two source trees (before and after a change), side by side.

Runs ``benchmarks/<script>`` from tree A, then from tree B, then A, B, ... (``--rounds``), each
in a fresh process with ``PYTHONPATH`` set to that tree, so both see the same machine load
over the same minutes. Each run's own output is printed as it comes; compare the ratio lines.

    git worktree add /tmp/before <commit>
    OMP_NUM_THREADS=1 nice python benchmarks/ab_trees.py /tmp/before . --rounds 2 -- \\
        tracked_vs_plain.py --models smallcnn --modes memory sketch
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="tree A (the checkout before the change)")
    ap.add_argument("b", help="tree B (the checkout after)")
    ap.add_argument("--rounds", type=int, default=2)
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        ap.error("name the benchmark after --, e.g. -- tracked_vs_plain.py --models smallcnn")
    cut = argv.index("--")
    a, script = ap.parse_args(argv[:cut]), argv[cut + 1:]
    for r in range(a.rounds):
        for label, tree in (("A", a.a), ("B", a.b)):
            tree = str(Path(tree).resolve())
            with open("/proc/loadavg") as f:
                load = f.read().split()[:3]
            print(f"=== round {r + 1} tree {label} ({tree}), load {' '.join(load)}", flush=True)
            env = {**os.environ, "PYTHONPATH": tree}
            subprocess.run([sys.executable, str(Path(tree) / "benchmarks" / script[0]), *script[1:]], cwd=tree,
                           env=env, check=True)


if __name__ == "__main__":
    main()
