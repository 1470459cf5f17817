"""Where and with what a run was made: recorded as root attributes of every run file."""
from __future__ import annotations

import datetime
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch

from gradlab.version import __version__

# The root attributes ``collect`` writes, in the order readers list them.
PROVENANCE_KEYS = ("gradlab_version", "torch_version", "cuda_version", "numpy_version", "h5py_version",
                   "python_version", "device", "device_name", "cpu_threads", "cpu_count", "load_average", "hostname",
                   "platform", "git_commit", "seed", "created_utc")


def git_commit() -> str:
    """Commit of the gradlab source tree (``+dirty`` if modified), or "" outside git."""
    src = Path(__file__).resolve().parent.parent
    try:
        res = subprocess.run(["git", "-C", str(src), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        sha = res.stdout.strip()
        if res.returncode != 0 or not sha:
            return ""
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def collect(device: torch.device, seed: int) -> dict[str, str | int]:
    """Provenance attributes: versions, hardware, seed, commit, time."""
    import h5py
    import numpy

    return {
        "gradlab_version": __version__,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "numpy_version": numpy.__version__,
        "h5py_version": h5py.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "device_name": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count() or 0,
        # the machine's 1, 5 and 15 minute load averages when the run started: timings of runs made
        # beside other work are only comparable with it ("" where the platform has none)
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "",
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "seed": seed,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
