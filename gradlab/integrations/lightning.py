"""``GradlabCallback``: the gradlab tracker in a PyTorch Lightning ``Trainer``.

    trainer = pl.Trainer(max_epochs=6, callbacks=[GradlabCallback("runs/lit.h5", probes={...})])

Install with ``pip install -e ".[lightning]"`` in a checkout (the distribution is
``gradlab-minibatch``; ``install.sh`` includes it). The callback builds a ``gradlab.Tracker`` on
the LightningModule at fit start, freezes theta_e at each training epoch's start, counts
optimizer steps, and at the epoch's end probes every order and commits the epoch's rows:
the learning rate of the first optimizer's first group at the epoch's start, ``train/loss`` as
the epoch's mean training loss (of the losses ``training_step`` returned, weighted by batch
size, as ``/train/loss`` is defined; a logged ``train_loss``, whose value depends on
``on_step``/``on_epoch``, is replaced by it), and every other scalar in
``trainer.callback_metrics`` (``val_x`` is stored as ``test/x``, ``train_x`` as ``train/x``,
anything else as ``user/<name>``). The probe's forward pass is ``module(x)`` and its loss
``loss_fn(output, y)`` (cross-entropy unless given): the LightningModule's ``forward`` must
return the logits that ``loss_fn`` expects.

After each committed epoch the callback sends the tracker's per-epoch summary
(``gradlab.runfile.epochlog.epoch_values``: mean D per probe, in random units too, the noise
scale, the label entropy, per-tensor parameter statistics, ...; the tags are the run file's
dataset names) to every logger of the trainer (``trainer.loggers``) with ``step`` = the epoch,
as ``TensorBoardLogger`` and ``MLflowLogger`` (``gradlab.loggers``) do; ``log=False`` turns it off.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pytorch_lightning as pl
import torch

from gradlab.data.probes import ProbeBatches
from gradlab.track.tracker import Tracker


class GradlabCallback(pl.Callback):
    """Tracks gradient distances of fixed probe batches; ``tracker_kwargs`` go to ``Tracker``."""

    def __init__(self, out: str | Path, probes: Mapping[str, Iterable | ProbeBatches], *, log: bool = True,
                 **tracker_kwargs: Any):
        super().__init__()
        self.out, self.probes, self.kwargs, self.log = Path(out), probes, tracker_kwargs, log
        self.tracker: Tracker | None = None
        self._lr: float | None = None
        self._loss_sum, self._seen = 0.0, 0  # this epoch's training losses x batch sizes, and images

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            raise RuntimeError("GradlabCallback supports single-process training only; "
                               "use gradlab run under torchrun for several processes")
        config = self.kwargs.pop("config", None) or {"lightning": {"max_epochs": trainer.max_epochs,
                                                                   "module": type(pl_module).__name__}}
        loggers = [*self.kwargs.pop("loggers", ()), *([LightningLoggers(trainer)] if self.log else [])]
        self.tracker = Tracker(pl_module, self.out, self.probes, config=config, epochs=trainer.max_epochs,
                               loggers=loggers, **self.kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tracker.epoch_start()
        # the epoch's learning rate, read now: Lightning steps epoch-wise schedulers before
        # on_train_epoch_end runs
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None
        self._loss_sum, self._seen = 0.0, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.tracker.step()
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if torch.is_tensor(loss) and loss.numel() == 1:
            n = _batch_size(batch)
            self._loss_sum += float(loss.detach()) * n
            self._seen += n

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        scalars = {}
        if self._lr is not None:
            scalars["lr"] = self._lr
        for key, value in trainer.callback_metrics.items():
            name = "test_" + key[4:] if key.startswith("val_") else key
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            scalars[name.replace("/", "_")] = v
        if self._seen:
            scalars["train_loss"] = self._loss_sum / self._seen  # the epoch's mean, not the last batch's
        was_training = pl_module.training
        self.tracker.epoch_end(**scalars)
        pl_module.train(was_training)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.tracker is not None:
            self.tracker.close("complete")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.tracker is not None:
            self.tracker.close("failed", f"{type(exception).__name__}: {exception}")


class LightningLoggers:
    """An ``EpochLogger`` that hands the tracker's per-epoch summary to the trainer's own loggers."""

    def __init__(self, trainer: pl.Trainer):
        self.trainer = trainer

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        for lg in self.trainer.loggers:
            lg.log_metrics(dict(values), step=epoch)

    def close(self) -> None:
        for lg in self.trainer.loggers:
            lg.save()


def _batch_size(batch: Any) -> int:
    """Images in a training batch: the length of its first tensor (``(x, y)``, ``{"x": ...}``), else 1."""
    while isinstance(batch, (tuple, list, Mapping)) and len(batch):
        batch = next(iter(batch.values())) if isinstance(batch, Mapping) else batch[0]
    return len(batch) if torch.is_tensor(batch) and batch.dim() else 1
