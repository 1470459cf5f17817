"""One SGD epoch over fixed or shuffled batches, and the test-set evaluation.

Shared by ``gradlab run`` (``gradlab.train.runner``) and the benchmarks; a user's own loop
replaces this file, not the tracker.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from gradlab.data.datasets import EVAL_BATCH, BatchLoader
from gradlab.train.distributed import SINGLE, Dist
from gradlab.train.nonfinite import NonFiniteGuard


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, loader: BatchLoader, order: torch.Tensor,
                augment: torch.Generator | None, progress: bool = False, desc: str = "train",
                on_step: Callable[[], None] | None = None, guard: NonFiniteGuard | None = None,
                dist: Dist = SINGLE) -> tuple[float, float]:
    """One SGD pass over the full batches of ``order``; returns mean loss and accuracy
    (pixel accuracy for segmentation). ``on_step``, if given, is called after every
    optimizer step, while ``p.grad`` still holds that step's minibatch gradient.
    ``guard`` (optional) checks each batch's loss and gradients for NaN/Inf before the step.
    Under torchrun (``dist``) each rank trains on its slice of every batch and the metrics
    are summed over ranks."""
    model.train()
    total_loss = torch.zeros((), dtype=torch.float64, device=loader.device)
    correct = torch.zeros((), dtype=torch.int64, device=loader.device)
    n = pixels = 0  # images, predictions (pixels for segmentation)
    batches = tqdm(loader.batches(order, augment, dist.shard), total=len(order) // loader.batch_size, desc=desc,
                   leave=False, disable=not progress)
    for k, (x, y) in enumerate(batches):
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if guard is not None:
            guard.check(k, loss, model.parameters())
        opt.step()
        if on_step is not None:
            on_step()
        total_loss += loss.detach() * len(y)
        correct += (out.argmax(1) == y).sum()
        n += len(y)
        pixels += y.numel()
    if dist.active:
        counts = torch.tensor([float(correct), float(n), float(pixels)], dtype=torch.float64, device=loader.device)
        dist.all_reduce_(total_loss, counts)
        correct, n, pixels = int(counts[0]), int(counts[1]), int(counts[2])
    return float(total_loss) / n, int(correct) / pixels


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, dist: Dist = SINGLE) -> tuple[float, float]:
    """Mean loss and accuracy over every image of ``loader`` (eval mode); under torchrun the
    evaluation batches are dealt round-robin over the ranks and the sums all-reduced."""
    model.eval()
    total, correct, n = 0.0, 0, 0
    for x, y in loader.all_batches(owned=dist.owned(-(-len(loader.data) // EVAL_BATCH))):
        out = model(x)
        total += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        n += len(y)
    model.train()
    if dist.active:
        sums = torch.tensor([total, correct, n], dtype=torch.float64, device=loader.device)
        dist.all_reduce_(sums)
        total, correct, n = float(sums[0]), int(sums[1]), int(sums[2])
    return total / max(n, 1), correct / max(n, 1)
