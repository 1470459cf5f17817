"""Loggers: the tracker's per-epoch summary (``gradlab.runfile.epochlog``) in other tools.

    from gradlab.loggers import TensorBoardLogger, MLflowLogger
    tracker = gradlab.Tracker(model, "runs/mine.h5", probes,
                              loggers=[TensorBoardLogger("runs/tb"), MLflowLogger("file:./mlruns")])

Each is called after an epoch is committed to the run file, with the same numbers the run file
holds (``gradlab.runfile.epochlog.epoch_values``). Both are optional imports: without the
``loggers`` extra (``pip install "gradlab-minibatch[loggers]"``) gradlab imports as before and a
logger's constructor says, in one line, what to install. ``export_tensorboard`` writes a
finished run's epochs as TensorBoard events (``gradlab export --tensorboard DIR``); the
Lightning callback (``gradlab.integrations.lightning``) sends the same values to Lightning's
own logger.
"""
from __future__ import annotations

from gradlab.loggers.export import export_tensorboard, replay
from gradlab.loggers.mlflow import MLflowLogger, mlflow_key
from gradlab.loggers.tensorboard import TensorBoardLogger
from gradlab.runfile.epochlog import EpochLogger, epoch_values

__all__ = ["EpochLogger", "MLflowLogger", "TensorBoardLogger", "epoch_values", "export_tensorboard", "mlflow_key",
           "replay"]
