"""torch.distributed (torchrun) support: DDP training and sharded probe passes.

``torchrun --nproc_per_node=N -m gradlab run STUDY.toml`` starts N copies of gradlab; each
finds ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in its environment, joins the process group
(NCCL on CUDA, gloo on CPU) and works on ``cuda:LOCAL_RANK`` (or the CPU). The design goal
is that the run file equals a single-process run up to floating-point reduction order:

- training: every rank walks the same global batches in the same order and draws the same
  augmentation randoms for the whole global batch (same generator, same order), then keeps
  its contiguous slice of ``batch_size / world`` images. DDP averages the slices' mean-loss
  gradients, which is the single-process mean-loss gradient. BatchNorm layers become
  ``SyncBatchNorm2d``: while training they normalise with the statistics of the whole
  global batch (one all-reduce per layer), so activations, running statistics and
  gradients match one process holding the whole batch.
- probe pass: rank r takes the whole probe batches k = r, r + N, r + 2N, ... at the same
  theta_e, in plain (per-batch) BatchNorm mode, exactly as a single process would. The
  float64 weighted gradient sums are all-reduced into the full gradient G; each rank then
  reduces its own stored gradients against G (any ``GradStore``; no rank ever holds more
  than its share of the K gradients), and the small per-batch rows (K floats per measure,
  K x L per layer) are all-gathered and put back in batch order, where the noise scale sees
  all K squared distances.
- evaluation: test batches are dealt round-robin and the float64 sums all-reduced.
- one run file: only rank 0 writes it; the other ranks get a ``NullWriter``.

Without torchrun (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``) ``SINGLE`` is used and nothing here
changes what a run computes.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Iterator

import torch
import torch.distributed as tdist
from torch import nn

from gradlab.errors import ConfigError, GradlabError
from gradlab.track.shard import Shard
from gradlab.train.accel import resolve_device

ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class Dist(Shard):
    """A torchrun rank as the tracker sees it (``gradlab.track.shard.Shard``), plus what the
    runner does with the model: SyncBatchNorm and the DDP wrapper."""

    # ------------------------------------------------------------------ model

    def prepare(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """``(module, train_model)``: BatchNorm -> SyncBatchNorm2d in place, and the DDP wrapper to
        train through (``module`` itself in a single process). Probes and evaluation use ``module``."""
        if not self.active:
            return model, model
        module = convert_sync_batchnorm(model, self.bn_group)
        ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)
        return module, ddp

    @contextlib.contextmanager
    def sync_batchnorm(self, module: nn.Module) -> Iterator[None]:
        """Within: SyncBatchNorm2d layers of ``module`` normalise over the global batch (training)."""
        layers = [m for m in module.modules() if isinstance(m, SyncBatchNorm2d)] if self.active else []
        for m in layers:
            m.sync = True
        try:
            yield
        finally:
            for m in layers:
                m.sync = False


SINGLE = Dist()


def setup(device_name: str) -> tuple[Dist, torch.device | None]:
    """Join the torchrun job described by the environment, if any.

    Returns ``(dist, device)``; ``device`` is None in a single process (``train.device``
    decides as usual) and this rank's device under torchrun: ``cuda:LOCAL_RANK`` when
    ``train.device`` is ``auto`` or ``cuda`` and CUDA is visible, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return SINGLE, None
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise GradlabError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with torchrun "
                           f"(torchrun --nproc_per_node=N -m gradlab run STUDY.toml)")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device_name == "cpu":
        device = torch.device("cpu")
    elif device_name in ("auto", "cuda"):
        device = resolve_device(device_name)  # each rank then takes its own GPU
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
    else:
        raise ConfigError(f'train.device = "{device_name}" under torchrun: each rank uses cuda:LOCAL_RANK, '
                          f'so set train.device = "auto", "cuda" or "cpu"')
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                              f"visible; lower --nproc_per_node")
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = not tdist.is_initialized()
    if owns:
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(minutes=30)}
        if device.type == "cuda":
            kwargs["device_id"] = device  # eager NCCL init, bound to this rank's GPU
        tdist.init_process_group(**kwargs)
    else:
        backend = tdist.get_backend()
    if tdist.get_world_size() != world or tdist.get_rank() != rank:
        raise GradlabError(f"process group has world {tdist.get_world_size()} rank {tdist.get_rank()}, "
                           f"environment says {world} / {rank}")
    # gloo runs collectives on worker threads: SyncBatchNorm2d's all-reduces get their own group
    # beside DDP's asynchronous bucket all-reduces. NCCL serialises both on one stream, in the
    # same order on every rank, as torch.nn.SyncBatchNorm does.
    bn_group = tdist.new_group(backend="gloo") if backend == "gloo" else None
    return Dist(rank, world, local_rank, backend, device, owns, bn_group), device


def check_batch_size(batch_size: int, world: int) -> None:
    """Each rank trains on batch_size / world images of every global batch."""
    if world > 1 and batch_size % world:
        lo = batch_size - batch_size % world
        raise ConfigError(f"train.batch_size = {batch_size} does not divide by the {world} processes of this "
                          f"torchrun job; use a multiple of {world} (e.g. {lo or world} or {lo + world}) "
                          f"or change --nproc_per_node")


# --------------------------------------------------------------------------- SyncBatchNorm

class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum that every rank sees is the sum of
    every rank's gradient (what ``torch.distributed.nn.functional.all_reduce`` did)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        tdist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)
        tdist.all_reduce(grad, group=ctx.group)
        return grad, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across ranks.

    Only while ``sync`` is set (``Dist.sync_batchnorm``, around DDP training steps) and a
    process group with more than one rank exists; otherwise it is exactly ``nn.BatchNorm2d``
    (so probe passes through ``functional_call`` on whole batches, and evaluation, use plain
    per-batch or running statistics, as in a single process). Unlike
    ``torch.nn.SyncBatchNorm`` it works with gloo on the CPU as well as NCCL on CUDA.

    Each rank computes its local mean and biased variance (``var_mean``, numerically as the
    native kernel), and one float64 all-reduce of ``[n m, n (v + m^2), n]`` gives the global
    mean and variance. The all-reduce is autograd-aware, so the backward pass carries the
    gradient through the shared statistics to every rank, as for one process.
    """

    sync: bool = False
    group: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.sync and self.training and tdist.is_available() and tdist.is_initialized()
                and tdist.get_world_size(self.group) > 1):
            return super().forward(x)
        self._check_input_dim(x)
        out_dtype = x.dtype
        if x.dtype in (torch.float16, torch.bfloat16):  # autocast: statistics and affine in float32, as native BN
            x = x.float()
        c = x.shape[1]
        n = x.numel() // c
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        m64 = mean.double()
        packed = torch.cat([m64 * n, (var.double() + m64 * m64) * n, m64.new_full((1,), float(n))])
        packed = _AllReduceSum.apply(packed, self.group)
        total = packed[-1]
        g_mean64 = packed[:c] / total
        g_var64 = (packed[c:2 * c] / total - g_mean64 * g_mean64).clamp_min(0)
        g_mean, g_var = g_mean64.to(x.dtype), g_var64.to(x.dtype)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                count = float(total)
                unbiased = g_var64.detach() * (count / max(count - 1.0, 1.0))
                self.running_mean.mul_(1 - momentum).add_(g_mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)
        shape = (1, c, 1, 1)
        y = (x - g_mean.view(shape)) * torch.rsqrt(g_var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(out_dtype)


def convert_sync_batchnorm(module: nn.Module, group: Any = None) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by a ``SyncBatchNorm2d`` sharing its tensors.

    Names of parameters and buffers are unchanged, so the ``ParamLayout`` and theta_e
    snapshots stay valid.
    """
    if type(module) is nn.BatchNorm2d:
        new = SyncBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, device=None, dtype=None)
        new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.training = module.training
        new.group = group
        return new
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm(child, group)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
