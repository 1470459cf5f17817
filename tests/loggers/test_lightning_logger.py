"""GradlabCallback sends the tracker's per-epoch summary to Lightning's own logger (CSVLogger
here): the same numbers as the run file, read through the public Run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pl = pytest.importorskip("pytorch_lightning")

from gradlab.integrations.lightning import GradlabCallback  # noqa: E402
from tests.loggers.test_loggers import expected  # noqa: E402


class Lit(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_logger_holds_the_run_files_numbers(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    torch.manual_seed(0)
    x, y = torch.randn(48, 6), torch.randint(0, 3, (48,))
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    probes = {"random": [(x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]}
    out = tmp_path / "lit.h5"
    logger = CSVLogger(tmp_path / "csv", name="t", version=0)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
                         callbacks=[GradlabCallback(out, probes=probes)])
    trainer.fit(Lit(), train)
    df = pd.read_csv(tmp_path / "csv" / "t" / "version_0" / "metrics.csv")
    want = expected(out)
    for e, values in enumerate(want):
        row = df[(df.step == e) & df["probes/random/distance_l2"].notna()]
        assert len(row) == 1
        for tag, v in values.items():
            if tag.startswith("user/"):
                continue  # the helper's loop logs user/my_key; this trainer has none
            np.testing.assert_allclose(row[tag].iloc[0], v, rtol=1e-6, err_msg=tag)
