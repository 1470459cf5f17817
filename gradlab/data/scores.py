"""Score cache: per-image metric scores in one HDF5 file (default ``data/scores.h5``).

Scoring CIFAR-10 by edges or LPIPS takes tens of seconds to minutes, and every run of a
study needs the same scores, so they are computed once (``gradlab scores``) and reused.
An entry is keyed by everything the scores depend on::

    /<dataset>/<fingerprint>/<metric>/v<version>[_<variant>]   float64 [N] or [N, C]

``fingerprint`` is the sha1 of the images' shape and uint8 bytes (so a different subset,
a changed download or a changed synthetic generator misses the cache instead of
returning stale scores), ``version`` is ``Metric.version`` (bumped when a computation
changes) and ``variant`` is ``Metric.variant`` (e.g. which LPIPS backbone weights).
Attributes record when and how each entry was computed.

The library default (``orders.compute_scores``) does not cache; ``gradlab run`` passes
``cached_scores(<data.root>/scores.h5)`` to the runner.
"""
from __future__ import annotations

import sys

import datetime
import hashlib
import time
import warnings
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from gradlab.version import __version__
from gradlab.data.datasets import ImageSet
from gradlab.metrics import Metric, get_metric, score_images
from gradlab.data.orders import ScoreFn

DEFAULT_PATH = Path("data/scores.h5")


def fingerprint(images: torch.Tensor) -> str:
    """sha1 of shape, dtype and bytes of ``images`` (about 0.3 s for CIFAR-10's 150 MB)."""
    h = hashlib.sha1(f"{tuple(images.shape)}|{images.dtype}|".encode())
    h.update(memoryview(images.contiguous().numpy()).cast("B"))
    return h.hexdigest()


def entry_key(dataset: str, fp: str, metric: Metric) -> str:
    variant = f"_{metric.variant}" if metric.variant else ""
    return f"{dataset}/{fp}/{metric.name}/v{metric.version}{variant}"


class ScoreCache:
    """Read and write cached scores in one HDF5 file. Counts ``hits`` and ``misses``.

    The file is opened only for each lookup or store, so several processes can share it
    one at a time; a cache that cannot be read or written is skipped with a warning
    (scores are then computed as if uncached), never an error that stops a run.
    """

    def __init__(self, path: str | Path = DEFAULT_PATH, progress: bool = False):
        self.path = Path(path)
        self.progress = progress and sys.stderr.isatty()  # no bars in a log file
        self.hits = 0
        self.misses = 0
        self._fp: dict[int, tuple[torch.Tensor, str]] = {}  # id(images) -> (images, fingerprint)

    def fingerprint(self, data: ImageSet) -> str:
        """Fingerprint of ``data.images``, hashed once per tensor."""
        images = data.pixels("the score cache")
        key = id(images)
        hit = self._fp.get(key)
        if hit is None or hit[0] is not images:
            hit = (images, fingerprint(images))
            self._fp[key] = hit
        return hit[1]

    def lookup(self, metric: Metric, data: ImageSet) -> np.ndarray | None:
        if not self.path.is_file():
            return None
        key = entry_key(data.name, self.fingerprint(data), metric)
        try:
            with h5py.File(self.path, "r") as f:
                if key in f:
                    return f[key][()]
        except OSError as exc:
            warnings.warn(f"score cache {self.path} unreadable ({exc}); computing {metric.name} scores "
                          f"(if no other process is writing it, delete it to rebuild the cache)", stacklevel=2)
        return None

    def store(self, metric: Metric, data: ImageSet, scores: np.ndarray, seconds: float) -> None:
        key = entry_key(data.name, self.fingerprint(data), metric)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(self.path, "a") as f:
                if key in f:
                    del f[key]
                ds = f.create_dataset(key, data=scores, fletcher32=True)  # damaged scores fail on read
                ds.attrs.update(dict(
                    metric=metric.name, version=metric.version, variant=metric.variant, dataset=data.name,
                    fingerprint=self.fingerprint(data), n=len(data), seconds=seconds, gradlab_version=__version__,
                    computed_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")))
        except OSError as exc:
            warnings.warn(f"could not write score cache {self.path} ({exc}); scores not cached", stacklevel=2)

    def scores(self, name: str, data: ImageSet) -> np.ndarray:
        """Scores of ``data`` under metric ``name``: from the cache, else computed and stored."""
        metric = get_metric(name)
        cached = self.lookup(metric, data)
        if cached is not None:  # the key's fingerprint includes the images' shape
            self.hits += 1
            return cached
        self.misses += 1
        t0 = time.perf_counter()
        with tqdm(total=len(data), desc=f"scores {name}", unit="img", leave=False, disable=not self.progress) as bar:
            out = score_images(metric, data.pixels(f"the {name} metric"), progress=bar.update)
        self.store(metric, data, out, time.perf_counter() - t0)
        return out

    def __call__(self, name: str, data: ImageSet) -> np.ndarray:
        return self.scores(name, data)


def cached_scores(path: str | Path = DEFAULT_PATH, progress: bool = False) -> ScoreFn:
    """A ``ScoreFn`` for ``Runner``/``build_study`` that reads and fills the cache at ``path``."""
    return ScoreCache(path, progress)


def compute_all(data: ImageSet, metrics: list[str], path: str | Path = DEFAULT_PATH, progress: bool = True,
                log: Callable[[str], None] = print) -> dict[str, np.ndarray]:
    """Fill the cache at ``path`` with every metric of ``data``; logs one line per metric."""
    cache = ScoreCache(path, progress)
    out = {}
    for name in metrics:
        t0 = time.perf_counter()
        before = cache.hits
        s = cache.scores(name, data)
        metric = get_metric(name)
        p = metric.primary(s)
        how = "cached" if cache.hits > before else f"computed in {time.perf_counter() - t0:.1f} s"
        log(f"{name:>9}: {len(s):,} images {how}; {metric.label or name}: min {p.min():.4g}, "
            f"median {np.median(p):.4g}, max {p.max():.4g}")
        out[name] = s
    return out
