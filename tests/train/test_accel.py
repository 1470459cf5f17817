"""bf16 autocast and channels_last (gradlab.train.accel), tested on CPU where both are legal."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradlab.train.accel import accelerate
from gradlab.config import ModelConfig
from gradlab.data.datasets import synthetic_images
from gradlab.track.layout import ParamLayout
from gradlab.models import build_model
from gradlab.train.runner import Runner
from gradlab.track.probe import FrozenModel


def _pair(**accel):
    torch.manual_seed(0)
    plain = build_model(ModelConfig(name="smallcnn", norm="bn"))
    fast = accelerate(copy.deepcopy(plain), **accel)
    return plain, fast


def _grad(model, x, y):
    loss = F.cross_entropy(model(x), y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


def test_channels_last_gives_the_same_gradients_in_the_same_flat_order():
    plain, fast = _pair(channels_last=True)
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in fast.parameters())
    assert list(fast.state_dict()) == list(plain.state_dict())
    x, y = synthetic_images(16, seed=0)
    x = x.float() / 255
    ours = FrozenModel(fast, ParamLayout.of(fast)).grad(x, y)
    ref = _grad(plain.double(), x.double(), y).float()
    # float64 reference: fp32 convs on CPU differ from it by ~1e-4..1e-3 (NCHW) depending on the
    # kernel; a wrong flat order or a wrong gradient is O(1)
    assert float((ours - ref).norm() / ref.norm()) < 1e-3


def test_bf16_autocast_probe_equals_autograd_of_the_same_function_and_is_close_to_fp32():
    plain, fast = _pair(amp="bf16", channels_last=True)
    x, y = synthetic_images(16, seed=0)
    x = x.float() / 255
    out = fast(x)
    assert out.dtype == torch.float32  # the loss is taken in float32
    ours = FrozenModel(fast, ParamLayout.of(fast)).grad(x, y)
    assert ours.dtype == torch.float32
    ref = _grad(copy.deepcopy(fast), x, y)  # deepcopy keeps the accelerated class
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    exact = _grad(plain, x, y)
    cos = float(ours @ exact / (ours.norm() * exact.norm()))
    assert 0.98 < cos < 1.0  # bf16 matmuls: close to, but not equal to, the fp32 gradient


def test_amp_none_is_identity():
    model = build_model(ModelConfig(name="smallcnn"))
    cls = type(model)
    assert accelerate(model, "none", False) is model and type(model) is cls


@pytest.mark.e2e
def test_runner_with_bf16_channels_last_on_cpu(tiny, tmp_path):
    paths = []
    for amp, cl in (("none", False), ("bf16", True)):
        cfg = tiny(train={"epochs": 1, "amp": amp, "channels_last": cl}, track={"probes": ["random"]},
                   output={"path": str(tmp_path / f"{amp}.h5")})
        paths.append(Runner(cfg, progress=False, log=lambda s: None).run())
    with h5py.File(paths[0], "r") as a, h5py.File(paths[1], "r") as b:
        da, db = a["probes/random/distance_l2"][0], b["probes/random/distance_l2"][0]
        assert np.isfinite(db).all()
        np.testing.assert_allclose(db, da, rtol=0.1)  # epoch 0 is at the same seeded init


def test_amp_config_is_typed(tiny):
    from gradlab.errors import ConfigError

    with pytest.raises(ConfigError, match="train.amp"):
        tiny(train={"amp": "fp8"})


# --------------------------------------------------------------------------- train.threads

@pytest.mark.parametrize("spec, want", [("auto", None), (1, 1), (3, 3)])
def test_threads_setting(spec, want, monkeypatch):
    from gradlab.train.accel import resolve_threads

    if spec == "auto":
        from gradlab.train import accel

        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        for busy, threads in ((1.2, 1), (0.1, 2), (5.0, 1)):  # one core busy: one thread
            monkeypatch.setattr(accel, "busy_cores", lambda cores, b=busy: b)
            assert resolve_threads("auto") == threads
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's explicit choice wins over the load
        assert resolve_threads("auto") == 2
    else:
        assert resolve_threads(spec) == want


def test_busy_cores_sees_a_spinning_process_not_the_load_average(monkeypatch):
    """``auto`` measures the cores busy now; the 1-minute load average lags (a run just finished
    still counts there), so it must not be what decides on Linux."""
    import time

    from gradlab.train.accel import busy_cores

    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat here: busy_cores falls back to the load average")
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 7.0, 7.0))  # must be ignored
    quiet = busy_cores(os.cpu_count() or 1)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        loaded = busy_cores(os.cpu_count() or 1, window_s=0.5)
    finally:
        hog.kill()
    cores = os.cpu_count() or 1  # one spinning process is about one more busy core, up to all of them
    assert quiet < 7.0 and loaded >= min(quiet + 0.5, cores - 0.5), (quiet, loaded)


def test_threads_config_errors():
    from gradlab.config import config_from_dict
    from gradlab.errors import ConfigError

    for bad in ("fast", 0, 2.5):
        with pytest.raises(ConfigError, match="train.threads"):
            config_from_dict({"train": {"threads": bad}})
