"""GradlabCallback in a real pytorch-lightning Trainer on CPU, against plain autograd."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pl = pytest.importorskip("pytorch_lightning")

import gradlab  # noqa: E402
from gradlab.integrations.lightning import GradlabCallback  # noqa: E402


class LitNet(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)]


class Snapshot(pl.Callback):
    """The test's own theta_e at each training epoch start (runs after GradlabCallback's)."""

    def __init__(self):
        self.models = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.models.append(copy.deepcopy(pl_module.net))


def test_lightning_callback_writes_a_run_that_matches_autograd(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 1, 4, 4)
    y = (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 0).long()
    ds = torch.utils.data.TensorDataset(x, y)
    train = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True)
    val = torch.utils.data.DataLoader(ds, batch_size=32)
    probe = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    snap = Snapshot()
    out = tmp_path / "lit.h5"
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[GradlabCallback(out, probes={"random": probe}), snap])
    trainer.fit(LitNet(), train, val)
    with gradlab.open_run(out) as run:
        assert run.status == "complete" and run.epochs_done == 3
        curves = run.train_curves()
        np.testing.assert_allclose(curves.train_lr, [0.1, 0.1, 0.01])
        assert list(curves.train_phase) == [0, 0, 1] and "test_acc" in curves and "train_loss" in curves
        d = run.distances("random")
        for e, net in enumerate(snap.models):
            grads = []
            for xb, yb in probe:
                g = torch.autograd.grad(F.cross_entropy(net(xb), yb), list(net.parameters()))
                grads.append(torch.cat([t.reshape(-1) for t in g]).double())
            G = torch.stack(grads)
            full = G.mean(0)
            np.testing.assert_allclose(d[d.epoch == e].distance, (G - full).norm(dim=1).numpy(), rtol=1e-5)
