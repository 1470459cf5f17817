"""Time each image metric on CIFAR-sized data and print it next to its target.

Targets (issue #3, for all 50,000 CIFAR-10 training images on the 2-core dev machine):
intensity + hsv under 2 s together, edges under 60 s, lpips under 5 min on CPU. The
images are ``gradlab.data.datasets.synthetic_images`` (uint8, 3x32x32), which cost what CIFAR
costs: every metric's work depends on the image size only, except Canny whose cost
varies a little with edge density. Load average is printed: on a shared machine the
figures are upper bounds.

    python benchmarks/metrics_speed.py [--images 50000] [--metrics intensity,hsv,edges,lpips]
"""
from __future__ import annotations

import argparse
import time

from _common import conditions
from gradlab.data.datasets import synthetic_images
from gradlab.metrics import get_metric

TARGETS = {"intensity+hsv": 2.0, "edges": 60.0, "lpips": 300.0}  # seconds for 50,000 images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--metrics", default="intensity,hsv,edges,lpips")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    names = args.metrics.split(",")
    t = time.perf_counter()
    images, _ = synthetic_images(args.images, args.seed)
    print(f"{args.images:,} synthetic 32x32 images made in {time.perf_counter() - t:.1f} s; {conditions()}")
    scale = 50_000 / args.images
    times = {}
    for name in names:
        metric = get_metric(name)
        if name == "lpips":
            t = time.perf_counter()
            _ = metric.model  # weights (converted once, then from the cache)
            print(f"  lpips weights ({metric.variant}) loaded in {time.perf_counter() - t:.2f} s (not counted)")
        t = time.perf_counter()
        metric.compute(images)
        times[name] = time.perf_counter() - t
    if "intensity" in times and "hsv" in times:
        times["intensity+hsv"] = times["intensity"] + times["hsv"]
    print(f"{'metric':>14} {'seconds':>9} {'per 50k':>9} {'target':>8}  ok")
    for name, sec in times.items():
        target = TARGETS.get(name)
        per = sec * scale
        verdict = "" if target is None else ("yes" if per < target else "NO")
        print(f"{name:>14} {sec:9.2f} {per:9.2f} {'' if target is None else f'{target:8.0f}'}  {verdict}")
    print(f"after: {conditions()}")


if __name__ == "__main__":
    main()
