"""``TensorBoardLogger``: the per-epoch summary as TensorBoard scalars (``torch.utils.tensorboard``).

Each value of ``gradlab.runfile.epochlog.epoch_values`` is one scalar tag (the run file's
dataset name, e.g. ``probes/random/distance_l2``) at global step = epoch. TensorBoard stores
scalars as float32. The parameter statistics are scalars per tensor (``params/mean/<layer>``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from gradlab.loggers._optional import need


class TensorBoardLogger:
    """Write each committed epoch to a TensorBoard event file in ``log_dir``."""

    def __init__(self, log_dir: str | Path, **writer_kwargs: Any):
        need("tensorboard", "tensorboard", "TensorBoardLogger")  # torch's SummaryWriter imports it
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), **writer_kwargs)

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __repr__(self) -> str:
        return f"TensorBoardLogger({str(self.log_dir)!r})"
