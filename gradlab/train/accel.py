"""bf16 autocast and channels_last for every forward of a model (train, eval, probe).

``accelerate(model, amp, channels_last)`` swaps the model's class for a subclass whose
``forward`` converts the input to channels_last and runs the original forward under
``torch.autocast(bf16)``, returning float32 logits. Parameter names, the state dict and
``torch.func.functional_call`` (the probe pass at theta_e) are unchanged, so the tracker
needs no special case and the probe gradients are those of exactly the function that
training differentiates. Gradients w.r.t. the float32 parameters stay float32.

On CUDA this is the fast path for DPN-92 (tensor cores). On CPU both options are legal
(autocast supports bf16 on CPU) but usually slower; they are applied, not ignored, so a
CPU run tests the same code path.
"""
from __future__ import annotations

import torch
from torch import nn

from gradlab.errors import ConfigError

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> first CUDA device when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f'train.device "{name}" is not a device; use "auto", "cpu" or "cuda[:N]"') from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f'train.device = "{name}" but no CUDA device is visible; use "auto" or "cpu"')
    return device


def accelerate(model: nn.Module, amp: str = "none", channels_last: bool = False) -> nn.Module:
    """Apply ``train.amp`` / ``train.channels_last`` to ``model`` in place; returns it."""
    dtype = AMP_DTYPES[amp]
    if dtype is None and not channels_last:
        return model
    if channels_last:
        model.to(memory_format=torch.channels_last)
    base = type(model)
    base_forward = base.forward

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if dtype is None:
            return base_forward(self, x, *args, **kwargs)
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            out = base_forward(self, x, *args, **kwargs)
        return out.float()  # the loss (and so every gradient's scale) in float32

    cls = type(f"{base.__name__}_{amp}{'_cl' if channels_last else ''}", (base,),
               {"forward": forward, "__module__": base.__module__, "__doc__": base.__doc__})
    model.__class__ = cls
    return model


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine since boot, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cores(cores: int, window_s: float = 0.3) -> float:
    """Cores kept busy by other processes now (this one sleeps while it measures)."""
    import os
    import time

    a = _cpu_jiffies()
    if a is None:
        try:
            return os.getloadavg()[0]
        except OSError:  # not on every platform
            return 0.0
    time.sleep(window_s)
    b = _cpu_jiffies()
    total = b[1] - a[1]
    return cores * (b[0] - a[0]) / total if total > 0 else 0.0


def resolve_threads(spec: str | int) -> int:
    """CPU threads for torch's intra-op pool (``train.threads``): a number, or ``"auto"``.

    ``auto`` takes the cores that are free now: ``cores - round(busy cores)``, at least 1, where
    the busy cores are measured over the next 0.3 s from ``/proc/stat`` (Linux; elsewhere the
    1-minute load average). On a shared 2-core machine, torch's 2 threads beside another busy
    process run several times slower than 1 thread (they spin-wait for each other while the
    other process holds a core; see benchmarks/threads_under_load.py), so a busy machine gets
    1. The load average is not used where /proc/stat exists: it lags by minutes, so a run
    started right after another one finished saw that one's load and took 1 thread on an
    idle machine. A user's ``OMP_NUM_THREADS`` is an explicit choice: ``auto`` takes it.
    """
    import os

    cores = os.cpu_count() or 1
    if spec == "auto" and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    if spec == "auto":
        return max(1, min(cores, cores - round(busy_cores(cores))))
    try:
        n = int(spec)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigError(f'train.threads must be "auto" or a number >= 1, got {spec!r}')
    return n
