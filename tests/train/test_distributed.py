"""torchrun / DDP: a 2-process gloo run on the CPU writes the single-process run file.

The end-to-end tests launch ``python -m torch.distributed.run --standalone --nproc_per_node=2
-m gradlab run STUDY.toml`` exactly as a user would, and compare every dataset of the run file
with an in-process single-process run of the same study.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from gradlab.data.datasets import BatchLoader, ImageSet, synthetic_images
from gradlab.track.shard import NullWriter
from gradlab.train.distributed import SINGLE, SyncBatchNorm2d, check_batch_size, convert_sync_batchnorm
from gradlab.errors import ConfigError
from gradlab.train.runner import Runner

ROOT = Path(__file__).resolve().parents[2]


def test_rank_slices_of_an_augmented_batch_equal_the_whole_batch():
    """Every rank draws the whole global batch's augmentation randoms and keeps its slice."""
    x, y = synthetic_images(96, seed=3)
    loader = BatchLoader(ImageSet("t", x, y, tuple("0123456789")), torch.device("cpu"), 32)
    order = torch.randperm(96, generator=torch.Generator().manual_seed(1))
    whole = list(loader.batches(order, torch.Generator().manual_seed(5)))
    for world in (2, 4):
        parts = [list(loader.batches(order, torch.Generator().manual_seed(5), (r, world))) for r in range(world)]
        for k, (xb, yb) in enumerate(whole):
            assert all(len(p[k][1]) == 32 // world for p in parts)
            assert torch.equal(xb, torch.cat([p[k][0] for p in parts]))
            assert torch.equal(yb, torch.cat([p[k][1] for p in parts]))


def test_batch_size_must_divide_by_world_size():
    check_batch_size(30, 1)
    check_batch_size(32, 4)
    with pytest.raises(ConfigError, match="does not divide by the 4 processes.*multiple of 4"):
        check_batch_size(30, 4)


def test_single_process_defaults():
    assert not SINGLE.active and SINGLE.is_main and list(SINGLE.owned(5)) == [0, 1, 2, 3, 4]
    rows = {"a": np.arange(3.0), "b": None}
    assert SINGLE.gather_rows(rows, 3) is rows
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    module, train_model = SINGLE.prepare(model)
    assert module is model and train_model is model  # no conversion, no DDP wrapper
    # ranks other than 0 get a NullWriter: every public RunWriter method exists there and does nothing
    from gradlab.runfile.writer import RunWriter

    methods = [n for n in dir(RunWriter) if not n.startswith("_") and callable(getattr(RunWriter, n))]
    assert {"append", "commit", "write_pending", "close", "write_grads"} <= set(methods)
    for name in methods:
        assert getattr(NullWriter(), name)("x", 1.0, 0) is None


def test_sync_batchnorm_without_sync_is_plain_batchnorm():
    """Outside training steps (probe passes, evaluation) the converted layer is nn.BatchNorm2d."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    with torch.no_grad():
        plain[1].weight.uniform_(0.5, 2)
        plain[1].bias.uniform_(-1, 1)
    ref = {k: v.clone() for k, v in plain.state_dict().items()}
    twin = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    twin.load_state_dict(ref)
    conv = convert_sync_batchnorm(plain)
    assert isinstance(conv[1], SyncBatchNorm2d) and isinstance(conv[2][0], SyncBatchNorm2d)
    assert list(conv.state_dict()) == list(ref)  # names unchanged: layouts and snapshots stay valid
    x = torch.randn(8, 3, 10, 10)
    for mode in (True, False):
        conv.train(mode), twin.train(mode)
        torch.testing.assert_close(conv(x), twin(x), rtol=0, atol=0)
    for k, v in twin.state_dict().items():
        torch.testing.assert_close(conv.state_dict()[k], v, rtol=0, atol=0)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _ddp_step_worker(rank: int, world: int, port: int, out: str) -> None:
    """One DDP + SyncBatchNorm2d training step on this rank's slice; rank 0 saves the result."""
    import torch.distributed as tdist
    import torch.nn.functional as F

    from gradlab.config import ModelConfig
    from gradlab.train.distributed import Dist
    from gradlab.models import build_model

    os.environ.update(MASTER_ADDR="localhost", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="smallcnn", norm="bn"))
        xs, ys = synthetic_images(32, seed=7)
        loader = BatchLoader(ImageSet("t", xs, ys, tuple("0123456789")), torch.device("cpu"), 32)
        x, y = next(loader.batches(torch.arange(32), torch.Generator().manual_seed(3), (rank, world)))
        dist = Dist(rank, world, rank, "gloo", torch.device("cpu"), False, tdist.new_group())
        module, ddp = dist.prepare(model)
        with dist.sync_batchnorm(module):
            F.cross_entropy(ddp(x), y).backward()
        if rank == 0:
            torch.save({"grads": {n: p.grad for n, p in module.named_parameters()},
                        "buffers": dict(module.named_buffers())}, out)
    finally:
        tdist.destroy_process_group()


def test_ddp_sync_batchnorm_step_equals_whole_batch_step(tmp_path):
    """Gradients and running statistics of 2 ranks x 16 images = one process with 32 images."""
    import torch.multiprocessing as mp
    import torch.nn.functional as F

    from gradlab.config import ModelConfig
    from gradlab.models import build_model

    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_step_worker, args=(2, _free_port(), str(out)), nprocs=2)
    got = torch.load(out)
    torch.manual_seed(0)
    ref = build_model(ModelConfig(name="smallcnn", norm="bn"))
    xs, ys = synthetic_images(32, seed=7)
    loader = BatchLoader(ImageSet("t", xs, ys, tuple("0123456789")), torch.device("cpu"), 32)
    x, y = next(loader.batches(torch.arange(32), torch.Generator().manual_seed(3)))
    F.cross_entropy(ref(x), y).backward()
    for n, p in ref.named_parameters():
        # conv weights before BN sum terms that cancel over the batch: ~1e-5 relative (measured)
        err = float((got["grads"][n] - p.grad).norm() / p.grad.norm())
        assert err < 1e-4, (n, err)
    for n, b in ref.named_buffers():
        torch.testing.assert_close(got["buffers"][n], b, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- end to end under torchrun

STUDY = """
[data]
dataset = "synthetic"
subset = 256
test_subset = 64
augment = true
[model]
name = "smallcnn"
norm = "{norm}"
[train]
epochs = 2
batch_size = 32
lr = 0.05
milestones = [1]
seed = 0
device = "cpu"
[track]
probes = ["intensity", "random"]
measures = ["l2", "cosine"]
keep_grads = "all"
[output]
path = "{path}"
heatmaps = false
"""


def _datasets(f: h5py.File) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return {n: v for n, v in out.items() if not n.startswith("timing/")}  # wall-clock seconds differ


def _torchrun(study: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "gradlab", "run", str(study), "--quiet", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
# bn also resumes under DDP: 3 torchrun launches, 62 s (load 4, 2 cores); "none" stays in the default suite
@pytest.mark.parametrize("norm", [pytest.param("bn", marks=pytest.mark.slow), "none"])
def test_torchrun_two_gloo_ranks_write_the_single_process_run_file(tmp_path, norm):
    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(norm=norm, path=(tmp_path / "ddp.h5").as_posix()))
    if norm == "bn":  # also resume under DDP: epoch 0, then --resume to epoch 1 from rank 0's checkpoint
        res = _torchrun(study, "--set", "train.epochs=1")
        assert res.returncode == 0, res.stderr[-3000:]
        with h5py.File(tmp_path / "ddp.h5", "r") as f:
            assert f.attrs["epochs_done"] == 1
        res = _torchrun(study, "--resume")
    else:
        res = _torchrun(study)
    assert res.returncode == 0, res.stderr[-3000:]

    from gradlab.config import load_config

    cfg = load_config(study, [f'output.path="{(tmp_path / "single.h5").as_posix()}"'])
    Runner(cfg, progress=False, log=lambda s: None).run()

    with h5py.File(tmp_path / "ddp.h5", "r") as fd, h5py.File(tmp_path / "single.h5", "r") as fs:
        assert fd.attrs["status"] == "complete" and fd.attrs["epochs_done"] == 2
        assert fd.attrs["world_size"] == 2 and fd.attrs["dist_backend"] == "gloo"
        assert fs.attrs["world_size"] == 1
        ddp, single = _datasets(fd), _datasets(fs)
    assert sorted(ddp) == sorted(single)
    assert "probes/random/grads/epoch_1" in ddp  # keep_grads: every rank's share, in batch order
    assert np.isfinite(single["probes/random/noise_scale"][0])  # all K squared distances reached it
    for name, ref in single.items():
        got = ddp[name]
        assert got.shape == ref.shape and got.dtype == ref.dtype, name
        if ref.dtype.kind not in "fc":
            assert np.array_equal(got, ref), name
        elif "/grads/" in name:  # raw float32 batch gradients [K, P]: compare each batch's vector
            err = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
            # BN, epoch 1: see below; the same 1e-7 perturbation moves these vectors by 0.4%.
            assert err.max() < (2e-2 if name.endswith("epoch_1") else 1e-5), (name, err.max())
        elif name.startswith("params/"):  # per-step parameter statistics: row 0 is the init
            np.testing.assert_allclose(got[:1], ref[:1], rtol=1e-5, atol=1e-8, err_msg=name)
            # later rows follow training, see below; grad_norm is one minibatch gradient (~2e-3)
            np.testing.assert_allclose(got[1:], ref[1:], rtol=5e-3, atol=1e-6, err_msg=name)
        elif name.startswith("probes/") and name.split("/")[2] not in ("index", "batch_score"):
            # theta_0 is the same on every rank: epoch 0 matches to reduction order.
            np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-8, err_msg=name)
            # theta_1 comes from 8 SGD steps whose gradients are summed from 2 half-batches: with
            # BatchNorm, conv-weight gradients sum terms that cancel across the batch and differ by
            # ~1e-5 relative; 8 steps at lr 0.05 carry that to ~3e-4 in epoch-1 per-batch gradients
            # (a single-process run whose initial weights are perturbed by 1e-7 relative moves them
            # by 2e-4 too). Without a norm layer the slices' float32 rounding differs by ~1e-7, and on
            # some CPUs (this 2-core VM, torch 2.14.1) 8 steps carried it to 2.4e-3 in per-layer D and
            # 4e-3 in the raw epoch-1 gradients (ReLUs switching on a shifted input amplify it), where
            # CI's machine once agreed to 1e-5. So epoch 1 is compared at 5e-3.
            np.testing.assert_allclose(got[1:], ref[1:], rtol=5e-3, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-8, err_msg=name)
