"""The README's Tracker and Lightning examples run as pasted, and store the epoch's mean
training loss as /train/loss (the Lightning callback computes it itself)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradlab

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(after: str) -> str:
    """The first ```python block of the README after the line that starts with ``after``."""
    text = README.read_text()
    start = text.index(after)
    m = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert m, f"no python block after {after!r}"
    return m.group(1)


@pytest.mark.slow  # about 10-25 s on 2 shared cores
def test_readme_tracker_example_stores_the_epoch_mean_loss(tmp_path, monkeypatch):
    """The README's Tracker example runs as pasted and stores the epoch's mean loss (the
    Lightning tutorial runs in tests/test_docs.py)."""
    monkeypatch.chdir(tmp_path)
    code = _block("## In your own training loop")
    ns: dict = {"__name__": "__readme__"}
    exec(compile(code, "README.md (Tracker example)", "exec"), ns)  # noqa: S102 - the documentation's own code
    with gradlab.open_run(tmp_path / "runs" / "mine.h5") as run:
        assert run.status == "complete" and run.epochs_done == 4 and sorted(run.probes) == ["brightness", "random"]
        curves = run.train_curves()
        assert curves.train_loss.iloc[-1] == pytest.approx(float(np.mean(ns["losses"])), rel=1e-12)  # the epoch mean
        assert run.probe_attrs("brightness")["preprocessing"] == "user batches"


def test_lightning_callback_stores_the_epoch_mean_loss(tmp_path):
    """A module that logs train_loss per step (the last batch's value would be stored before):
    /train/loss is the batch-size-weighted mean of the epoch's training_step losses."""
    pl = pytest.importorskip("pytorch_lightning")
    from gradlab.integrations.lightning import GradlabCallback

    seen: list[list[tuple[float, int]]] = []

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

        def forward(self, x):
            return self.net(x)

        def on_train_epoch_start(self):
            seen.append([])

        def training_step(self, batch, _):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=False)  # the last step's value in callback_metrics
            seen[-1].append((float(loss.detach()), len(y)))
            return {"loss": loss}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    torch.manual_seed(0)
    x, y = torch.randn(56, 1, 4, 4), torch.randint(0, 3, (56,))
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=24)  # 24, 24, 8
    probe = [(x[:16], y[:16]), (x[16:32], y[16:32])]
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[GradlabCallback(tmp_path / "l.h5", probes={"random": probe})])
    trainer.fit(Lit(), train)
    with gradlab.open_run(tmp_path / "l.h5") as run:
        stored = run.train_curves().train_loss.to_numpy()
    want = [sum(v * n for v, n in ep) / sum(n for _, n in ep) for ep in seen]
    last = [ep[-1][0] for ep in seen]
    np.testing.assert_allclose(stored, want, rtol=1e-6)
    assert not np.allclose(stored, last)  # not the last batch's loss
