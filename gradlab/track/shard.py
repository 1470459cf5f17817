"""Who this process is in a torchrun job, as far as the tracker needs to know.

A probe pass can be sharded over the ranks of a ``torchrun`` job: rank r takes the whole
probe batches k = r, r + N, ..., the float64 gradient sums are all-reduced into the full
gradient and the per-batch rows all-gathered into batch order (``gradlab.train.distributed``
explains the design). ``SINGLE`` is the single-process case, where every collective is a
no-op; ``gradlab.train.distributed.Dist`` adds what the runner does with the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist


@dataclass
class Shard:
    """Who this process is in a torchrun job. ``world == 1``: a plain single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # collectives run here
    owns_group: bool = False  # we initialised the process group, so we destroy it
    bn_group: Any = None  # group for SyncBatchNorm2d's all-reduces (None: the default group)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ work split

    def owned(self, num_batches: int) -> range:
        """Probe batches this rank takes: k = rank, rank + world, ... (all K when single)."""
        return range(self.rank, num_batches, self.world)

    @property
    def shard(self) -> tuple[int, int] | None:
        """``(rank, world)`` for slicing a global batch, or None in a single process."""
        return (self.rank, self.world) if self.active else None

    # ------------------------------------------------------------------ collectives

    def all_reduce_(self, *tensors: torch.Tensor) -> None:
        """Sum each tensor in place over all ranks (no-op in a single process)."""
        if not self.active:
            return
        for t in tensors:
            moved = t.to(self.device)
            tdist.all_reduce(moved)
            if moved is not t:
                t.copy_(moved)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def max_int(self, value: int) -> int:
        """The largest ``value`` of all ranks, on every rank (``value`` in a single process)."""
        if not self.active:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return int(t.item())

    def gather_rows(self, rows: dict[str, np.ndarray | None], num_batches: int) -> dict[str, np.ndarray | None]:
        """Per-batch rows of ``owned(num_batches)`` on each rank -> all K rows in batch order, on every rank.

        Each value has leading dimension ``len(owned(K))`` (None values pass through). One
        float64 all-gather of all columns packed together; rows are small (K x (L + a few)).
        """
        if not self.active:
            return rows
        keys = [k for k, v in rows.items() if v is not None]
        mine = self.owned(num_batches)
        cols = [np.asarray(rows[k], dtype=np.float64).reshape(len(mine), int(np.prod(np.shape(rows[k])[1:])))
                for k in keys]
        widths = [c.shape[1] for c in cols]
        k_max = -(-num_batches // self.world)
        packed = torch.zeros(k_max, sum(widths), dtype=torch.float64, device=self.device)
        if len(mine):
            packed[: len(mine)] = torch.from_numpy(np.concatenate(cols, 1))
        parts = [torch.empty_like(packed) for _ in range(self.world)]
        tdist.all_gather(parts, packed)
        full = np.empty((num_batches, sum(widths)))
        for r, part in enumerate(parts):
            ks = np.arange(r, num_batches, self.world)
            full[ks] = part[: len(ks)].cpu().numpy()
        out: dict[str, np.ndarray | None] = dict(rows)
        start = 0
        for k, w in zip(keys, widths):
            block = full[:, start:start + w].reshape((num_batches, *np.shape(rows[k])[1:]))
            out[k] = block.astype(np.asarray(rows[k]).dtype, copy=False)
            start += w
        return out

    def gather_batches_to_main(self, local: torch.Tensor, num_batches: int) -> torch.Tensor | None:
        """This rank's rows ``[len(owned(K)), P]`` -> all ``[K, P]`` rows in batch order on rank 0
        (None elsewhere). Only for ``track.keep_grads``, which writes all K gradients anyway."""
        if not self.active:
            return local
        k_max = -(-num_batches // self.world)
        padded = local.new_zeros((k_max, *local.shape[1:]), device=self.device)
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(self.world)] if self.is_main else None
        tdist.gather(padded, parts, dst=0)
        if not self.is_main:
            return None
        out = local.new_empty((num_batches, *local.shape[1:]), device=self.device)
        for r, part in enumerate(parts):
            ks = torch.arange(r, num_batches, self.world, device=self.device)
            out[ks] = part[: len(ks)]
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable: a checkpoint dict of CPU tensors) on every rank. Under
        torchrun only rank 0 reads the run file and checkpoint; the nodes need not share a disk."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        tdist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def close(self) -> None:
        """Leave the process group if this process created it."""
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()
            self.owns_group = False

    def provenance(self) -> dict[str, int | str]:
        return {"world_size": self.world, "dist_backend": self.backend or "none"}


SINGLE = Shard()


class NullWriter:
    """Stands in for the run writer on ranks other than 0: every method call does nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
