"""``gradlab run`` with an import-path model and ``gradlab.Tracker`` in a loop written here
give the same run file: every dataset equal, except timing (wall clock)."""
from __future__ import annotations

import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradlab
from gradlab.data.datasets import BatchLoader, load_split
from gradlab.data.orders import OrderBatches, build_order
from gradlab.train.runner import Runner

SEED = 3
MODULE = """
import torch
from torch import nn

def make_net(cfg):
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Flatten(), nn.Linear(6 * 8 * 8, cfg.num_classes))
"""


def _user_loop(cfg, out):
    """The same study, by hand: seed, data, model, SGD with the step schedule, Tracker."""
    sys.modules.pop("eqnet", None)
    import eqnet

    tc = cfg.train
    train, test = load_split(cfg.data, train=True), load_split(cfg.data, train=False)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    model = eqnet.make_net(cfg.model)
    loader = BatchLoader(train, torch.device("cpu"), tc.batch_size)
    test_loader = BatchLoader(test, torch.device("cpu"), tc.batch_size)
    probes = {}
    for name in cfg.track.probes:
        probes[name] = OrderBatches(build_order(name, train, tc.batch_size, SEED), loader)
    opt = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    gen = torch.Generator().manual_seed(SEED)
    with gradlab.Tracker(model, out, probes, config=cfg.to_dict(), seed=SEED, epochs=tc.epochs,
                         param_stats=cfg.track.param_stats) as tracker:
        for e in range(tc.epochs):
            lr = tc.lr * tc.gamma ** sum(e >= m for m in tc.milestones)
            for g in opt.param_groups:
                g["lr"] = lr
            tracker.epoch_start()
            model.train()
            tot, correct, n, steps = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64), 0, 0
            for x, y in loader.batches(torch.randperm(len(train), generator=gen)):
                outp = model(x)
                loss = F.cross_entropy(outp, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tracker.step()
                tot += loss.detach() * len(y)
                correct += (outp.argmax(1) == y).sum()
                n += len(y)
                steps += 1
            model.eval()
            tl, tc_, tn = 0.0, 0, 0
            with torch.no_grad():
                for x, y in test_loader.all_batches():
                    o = model(x)
                    tl += float(F.cross_entropy(o, y, reduction="sum"))
                    tc_ += int((o.argmax(1) == y).sum())
                    tn += len(y)
            model.train()
            tracker.epoch_end(lr=lr, train_loss=float(tot) / n, train_acc=int(correct) / n, train_steps=steps,
                              test_loss=tl / tn, test_acc=tc_ / tn)


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


@pytest.mark.e2e
def test_runner_and_user_loop_write_the_same_file(tiny, tmp_path, monkeypatch):
    (tmp_path / "eqnet.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tiny(model={"name": "eqnet:make_net"}, data={"augment": False, "subset": 192},
               train={"epochs": 3, "milestones": [2], "seed": SEED},
               track={"probes": ["intensity", "random"], "param_stats": "every:4"})
    Runner(cfg, progress=False, log=lambda s: None).run()
    mine = tmp_path / "mine.h5"
    _user_loop(cfg, mine)
    a, b = _datasets(cfg.output.path), _datasets(mine)
    assert sorted(n for n in a if not n.startswith("timing/")) == sorted(n for n in b if not n.startswith("timing/"))
    compared = 0
    for name in a:
        if name.startswith("timing/"):
            continue
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        compared += 1
    assert compared > 20 and "probes/intensity/distance_l2" in a and "params/mean" in a
    with h5py.File(cfg.output.path) as fa, h5py.File(mine) as fb:
        assert fa.attrs["epochs_done"] == fb.attrs["epochs_done"] == 3
        assert fa.attrs["config"] == fb.attrs["config"]
