"""``MLflowLogger``: the per-epoch summary as MLflow metrics, through ``MlflowClient`` (no server
needed: a ``file:`` or ``sqlite:`` tracking URI is a local store).

The logger starts its own MLflow run (or continues ``run_id``) and never touches MLflow's
global "active run", so it works beside a loop that uses ``mlflow.start_run`` itself. Each value
of ``gradlab.runfile.epochlog.epoch_values`` is one metric at step = epoch. MLflow allows only
alphanumerics, ``_ - . /`` and spaces in a metric name, so every other character of a tag (and
the dots of a path segment of dots only) is written ``:<hex>:`` (``mlflow_key``):
``probes/random@class/distance_l2`` is ``probes/random:40:class/distance_l2``.

MLflow 3 keeps its file store (``file:./mlruns``) in maintenance mode and refuses it unless
``MLFLOW_ALLOW_FILE_STORE=true`` is set; ``sqlite:///mlflow.db`` needs no setting.
"""
from __future__ import annotations

import re
import time
from typing import Mapping

from gradlab.loggers._optional import need

_OK = re.compile(r"[\w.\- ]")


def mlflow_key(tag: str) -> str:
    """``tag`` as an MLflow metric name: allowed characters kept, every other one ``:<hex>:``."""
    def segment(s: str) -> str:
        if s and set(s) == {"."}:  # "." and ".." would be path steps to MLflow's store
            return ":2e:" * len(s)
        return "".join(c if _OK.fullmatch(c) else f":{ord(c):x}:" for c in s)

    return "/".join(segment(s) for s in tag.split("/"))


class MLflowLogger:
    """Log each committed epoch as MLflow metrics of one run.

    - ``tracking_uri``: where (``file:./mlruns``, ``sqlite:///mlflow.db``, a server); None:
      MLflow's default (``MLFLOW_TRACKING_URI``).
    - ``experiment``: experiment name (created when absent); ``run_name``, ``tags``: of the new run;
      ``run_id``: log into this existing run instead.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "gradlab", *, run_name: str | None = None,
                 run_id: str | None = None, tags: Mapping[str, str] | None = None):
        need("mlflow", "mlflow-skinny", "MLflowLogger")
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        if run_id is None:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
            run_id = self.client.create_run(exp_id, run_name=run_name, tags=dict(tags or {})).info.run_id
        self.run_id = run_id
        self._closed = False

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), float(v), now, epoch) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self, status: str = "FINISHED") -> None:
        if not self._closed:
            self._closed = True
            self.client.set_terminated(self.run_id, status)

    def __repr__(self) -> str:
        return f"MLflowLogger(run_id={self.run_id!r})"
