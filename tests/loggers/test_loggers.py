"""TensorBoard, MLflow and `gradlab export --tensorboard` hold the run file's per-epoch numbers.

The expected values are computed here from the public Run (distances, batch and epoch tables,
the common unit of gradlab.report.units, param_stats), not from gradlab.runfile.epochlog."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

import gradlab
from gradlab.errors import GradlabError
from gradlab.report.units import in_random_units

EPOCHS = 3


def _batches(seed: int, n: int = 3, m: int = 8):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(m, 6, generator=g), torch.randint(0, 3, (m,), generator=g)) for _ in range(n)]


def _train(out, loggers, sgd_epochs, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    probes = {"random": _batches(1), "mine@x": _batches(2)}
    with gradlab.Tracker(model, out, probes, loggers=loggers, **kw) as t:
        sgd_epochs(t, model, _batches(7, n=4), EPOCHS, lr=lambda e: 0.1 if e < 2 else 0.01, step=True,
                   train_loss=lambda e: 1.0 / (e + 1), my_key=lambda e: float(e) * 3)


def expected(path, user: bool = True) -> list[dict[str, float]]:
    """Per epoch: tag -> value, from the run file through the public Run."""
    with gradlab.open_run(path) as run:
        out = [{} for _ in range(run.epochs_done)]
        for p in run.probes:
            bt, et = run.batch_table(p), run.epoch_table(p)
            ru = in_random_units(run, p).mean(axis=1)
            for e in range(run.epochs_done):
                rows = bt[bt.epoch == e]
                for q in ("distance_l2", "distance_cosine", "label_entropy", "batch_norm"):
                    out[e][f"probes/{p}/{q}"] = rows[q].mean()
                for q in ("noise_scale", "full_norm"):
                    out[e][f"probes/{p}/{q}"] = et[q][e]
                out[e][f"probes/{p}/distance_l2_in_random_units"] = ru[e]
        curves = run.train_curves()
        ps = run.param_stats()
        for e in range(run.epochs_done):
            out[e]["train/lr"] = curves.train_lr[e]
            if user:
                out[e]["user/my_key"] = 3.0 * e
            last = ps[ps.epoch <= e + 1 + 1e-9]
            last = last[last.step == last.step.max()]
            for r in last.itertuples():
                out[e][f"params/{r.stat}/{r.layer}"] = r.value
        return out


def same32(a: float, b: float) -> bool:
    """Equal to float32 precision (TensorBoard's scalar type); NaN equals NaN (a noise scale where g2 <= 0)."""
    return bool(np.float32(a) == np.float32(b) or (np.isnan(a) and np.isnan(b)))


def _tensorboard(log_dir) -> dict[tuple[str, int], float]:
    from tbparse import SummaryReader

    df = SummaryReader(str(log_dir)).scalars
    return {(r.tag, int(r.step)): float(r.value) for r in df.itertuples()}


def test_tensorboard_and_mlflow_hold_the_run_files_numbers(tmp_path, monkeypatch, sgd_epochs):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this
    from gradlab.loggers import MLflowLogger, TensorBoardLogger, export_tensorboard, mlflow_key

    out = tmp_path / "r.h5"
    ml = MLflowLogger(f"file://{tmp_path / 'mlruns'}", experiment="t")
    _train(out, [TensorBoardLogger(tmp_path / "tb"), ml], sgd_epochs)
    want = expected(out)
    assert len(want) == EPOCHS and len(want[0]) > 20
    tb = _tensorboard(tmp_path / "tb")
    assert export_tensorboard(out, tmp_path / "tb-export") == EPOCHS
    exported = _tensorboard(tmp_path / "tb-export")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"file://{tmp_path / 'mlruns'}")
    for e, values in enumerate(want):
        for tag, v in values.items():
            assert same32(tb[(tag, e)], v), (tag, e)  # TensorBoard keeps float32
            assert same32(exported[(tag, e)], v), (tag, e)
            hist = {m.step: m.value for m in client.get_metric_history(ml.run_id, mlflow_key(tag))}
            np.testing.assert_allclose(hist[e], v, rtol=1e-6, err_msg=tag)  # NaN == NaN here
    assert "probes/mine:40:x/distance_l2" in {m for m in client.get_run(ml.run_id).data.metrics}
    assert client.get_run(ml.run_id).info.status == "FINISHED"


def test_export_tensorboard_from_the_command_line(tmp_path, capsys, sgd_epochs):
    pytest.importorskip("tensorboard")
    from gradlab.cli import main

    out = tmp_path / "r.h5"
    _train(out, [], sgd_epochs, param_stats="off")
    assert main(["export", str(out), "--tensorboard", str(tmp_path / "tb")]) == 0
    assert f"{EPOCHS} epochs" in capsys.readouterr().out
    tb = _tensorboard(tmp_path / "tb")
    for e, values in enumerate(expected(out)):
        assert values and all(same32(tb[(tag, e)], v) for tag, v in values.items())
    assert not any(t.startswith("params/") for t, _ in tb)  # param_stats = "off": none in the file, none logged
    assert main(["export", str(out)]) == 2


def test_loggers_are_optional_imports(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "mlflow", None)
    from gradlab.loggers import MLflowLogger, TensorBoardLogger

    for make, package in ((lambda: TensorBoardLogger(tmp_path), "tensorboard"), (MLflowLogger, "mlflow-skinny")):
        with pytest.raises(GradlabError) as exc:
            make()
        assert "\n" not in str(exc.value) and package in str(exc.value) and "[loggers]" in str(exc.value)


def test_a_logger_without_the_protocol_is_refused(tmp_path):
    with pytest.raises(GradlabError, match="log_epoch"):
        gradlab.Tracker(nn.Linear(6, 3), tmp_path / "r.h5", {"random": _batches(1)}, loggers=[object()])
    assert not (tmp_path / "r.h5").exists()


def test_the_loggers_howto_runs_as_pasted(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from tests.test_docs import DOCS, python_blocks, run_script

    res = run_script("\n".join(python_blocks(DOCS / "howto" / "loggers.md")), tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "events.out.tfevents" in res.stdout
    assert list((tmp_path / "snippet.py").parent.glob("*.h5")) == []  # the page writes into its own temporary folder


@pytest.mark.e2e
def test_export_of_a_gradlab_run_with_param_stats_every_n_steps(bn_run, tmp_path):
    """A run of `gradlab run` (the session's bn_run: parameter statistics every 4 steps): the
    exported values are the run file's, the parameter statistics at each epoch's last recording."""
    pytest.importorskip("tensorboard")
    from gradlab.loggers import export_tensorboard

    assert export_tensorboard(bn_run, tmp_path / "tb") == 2
    tb = _tensorboard(tmp_path / "tb")
    want = expected(bn_run, user=False)
    assert any(t.startswith("params/grad_norm/") for t in want[1])
    for e, values in enumerate(want):
        for tag, v in values.items():
            assert same32(tb[(tag, e)], v), (tag, e)


def test_a_failing_logger_is_dropped_with_a_warning_and_training_goes_on(tmp_path, sgd_epochs):
    class Broken:
        calls = 0

        def log_epoch(self, epoch, values):
            Broken.calls += 1
            raise ConnectionError("server gone")

        def close(self):
            pass

    with pytest.warns(UserWarning, match="failed at epoch 0 .*ConnectionError: server gone"):
        _train(tmp_path / "r.h5", [Broken()], sgd_epochs, param_stats="off")
    assert Broken.calls == 1
    with gradlab.open_run(tmp_path / "r.h5") as run:
        assert run.status == "complete" and run.epochs_done == EPOCHS
