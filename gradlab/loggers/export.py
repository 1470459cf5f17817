"""``gradlab export --tensorboard DIR``: a finished (or running) run's committed epochs, as a logger
would have received them live (``gradlab.runfile.epochlog``)."""
from __future__ import annotations

from pathlib import Path

from gradlab.runfile.epochlog import EpochLogger, epoch_rows, epoch_values
from gradlab.runfile.reader import Run, open_run


def replay(run: Run, logger: EpochLogger) -> int:
    """Send every committed epoch of ``run`` to ``logger`` (then close it); returns the epochs sent."""
    layers = list(run.layers().layer)
    try:
        for e in range(run.epochs_done):
            logger.log_epoch(e, epoch_values(epoch_rows(run, e), layers))
    finally:
        logger.close()
    return run.epochs_done


def export_tensorboard(run_path: str | Path, log_dir: str | Path) -> int:
    """Write the run's committed epochs as TensorBoard scalars in ``log_dir``; returns the epochs written."""
    from gradlab.loggers.tensorboard import TensorBoardLogger

    logger = TensorBoardLogger(log_dir)  # before the run is opened: a missing package costs nothing
    with open_run(run_path) as run:
        return replay(run, logger)
