"""NaN/Inf guard for the training loop (``train.on_nonfinite``).

Per batch it checks the loss and the gradient norms (one ``_foreach_norm`` launch) and
keeps, on the device, the count of bad batches and the first one. On CPU the flag is read
every batch, so ``stop`` stops before the bad step is applied. On CUDA reading it would
force a host sync per batch, so it is read every ``sync_every`` batches and at the epoch
end; the bad epoch is never committed either way, so the run file only holds good epochs.
"""
from __future__ import annotations

from typing import Iterable

import torch

from gradlab.errors import GradlabError


class NonFiniteError(GradlabError):
    """Training produced a NaN or Inf loss or gradient (``train.on_nonfinite = "stop"``)."""


class NonFiniteGuard:
    """Watches one epoch of training for NaN/Inf losses and gradients."""

    def __init__(self, policy: str, device: torch.device, epoch: int, lr: float, sync_every: int = 50):
        self.policy, self.epoch, self.lr = policy, epoch, lr
        self.sync_every = 1 if device.type == "cpu" else sync_every
        self.first = torch.full((), -1, dtype=torch.int64, device=device)  # first bad batch
        self.first_kind = torch.zeros((), dtype=torch.int64, device=device)  # 1 loss, 2 gradient
        self.count = torch.zeros((), dtype=torch.int64, device=device)

    def check(self, k: int, loss: torch.Tensor, params: Iterable[torch.nn.Parameter]) -> None:
        """Call after ``backward`` of batch ``k`` (before ``opt.step``)."""
        grads = [p.grad for p in params if p.grad is not None]
        loss_bad = ~torch.isfinite(loss.detach())
        grad_bad = ~torch.stack(torch._foreach_norm(grads)).isfinite().all() if grads else torch.zeros_like(loss_bad)
        bad = loss_bad | grad_bad
        new = bad & (self.first < 0)
        self.first = torch.where(new, torch.full_like(self.first, k), self.first)
        self.first_kind = torch.where(new, torch.where(loss_bad, 1, 2).to(self.first_kind), self.first_kind)
        self.count += bad.to(self.count.dtype)
        if self.policy == "stop" and (k + 1) % self.sync_every == 0:
            self.raise_if_bad()

    def raise_if_bad(self) -> None:
        first = int(self.first)
        if first < 0:
            return
        what = "loss" if int(self.first_kind) == 1 else "gradient"
        raise NonFiniteError(
            f"non-finite {what} (NaN/Inf) in epoch {self.epoch}, batch {first} at lr {self.lr:g}; the epochs before "
            f"are kept. Lower train.lr (or set train.on_nonfinite = \"continue\"), then resume with --resume")

    def finish(self) -> int:
        """End of epoch: raise under ``stop``; return the number of bad batches."""
        if self.policy == "stop":
            self.raise_if_bad()
        return int(self.count)
