"""Shared setup for the benchmark scripts: a model, synthetic data and a loader, seeded."""
from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from gradlab.config import config_from_dict  # noqa: E402
from gradlab.data.datasets import BatchLoader, load_split  # noqa: E402
from gradlab.track.layout import ParamLayout  # noqa: E402
from gradlab.models import build_model  # noqa: E402
from gradlab.train.accel import resolve_device  # noqa: E402


def setup(model_name: str, images: int, batch_size: int, device_name: str = "auto", amp: str = "none",
          channels_last: bool = False):
    """(cfg, device, loader, model, layout) for ``images`` synthetic training images."""
    from gradlab.train.accel import accelerate

    cfg = config_from_dict({"data": {"dataset": "synthetic", "subset": images}, "model": {"name": model_name},
                            "train": {"batch_size": batch_size, "device": device_name, "amp": amp,
                                      "channels_last": channels_last}})
    device = resolve_device(cfg.train.device)
    torch.manual_seed(0)
    data = load_split(cfg.data, train=True)
    loader = BatchLoader(data, device, batch_size)
    model = accelerate(build_model(cfg.model).to(device), amp, channels_last)
    return cfg, device, loader, model, ParamLayout.of(model)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conditions() -> str:
    """One line on the machine state: timings are only comparable under the same load."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
            f"load avg {load:.1f}, nice {os.nice(0)}")


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timer() -> float:
    return time.perf_counter()
