"""gradlab.watch without a browser: the states it reads and the page it writes in place."""
from __future__ import annotations

import os

import h5py
import torch
from torch import nn

import gradlab
from gradlab.runfile.lock import lock_path
from gradlab.watch import Watcher, read_state, writer_of


def _batches():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(3)]


def test_waiting_running_stopped_and_complete(tmp_path):
    run = tmp_path / "r.h5"
    assert read_state(run).status == "waiting"
    w = Watcher(run, tmp_path / "live.html", served=False, n_perm=10)
    assert w.poll() and "waiting" in (tmp_path / "live.html").read_text()
    t = gradlab.Tracker(nn.Linear(4, 2), run, {"random": _batches(), "mine": _batches()[::-1]})
    t.epoch_start()
    t.epoch_end(lr=0.1)
    s = read_state(run)
    assert (s.epochs_done, s.status) == (1, "running") and f"pid {os.getpid()}" in s.detail
    assert writer_of(run)[0] is True
    assert w.poll() and not w.poll()  # a change, then none
    page = (tmp_path / "live.html").read_text()
    assert "data-epochs-done='1'" in page and "http-equiv='refresh'" in page and "id='summary'" in page
    t.close()
    assert read_state(run).status == "complete" and w.poll() and w.finished
    assert "http-equiv='refresh'" not in (tmp_path / "live.html").read_text()  # a finished run stops refreshing
    with h5py.File(run, "r+") as f:  # as a killed writer leaves it: "running", and no holder in the lock
        f.attrs["status"] = "running"
    lock_path(run).write_text("")
    s = read_state(run)
    assert (s.status, s.epochs_done) == ("stopped", 1) and "--resume" in s.detail
    lock_path(run).write_text(f"pid 999999999 on host {os.uname().nodename} since 2026-01-01 00:00:00")
    assert read_state(run).status == "stopped"  # a dead pid on this host


def test_a_finished_gradlab_run_shows_complete(bn_run, tmp_path):
    w = Watcher(bn_run, tmp_path / "live.html", served=False, n_perm=10)
    assert w.poll() and w.finished and w.state.status == "complete" and w.state.epochs_done == 2
    page = (tmp_path / "live.html").read_text()
    assert "data-status='complete'" in page and "id='summary'" in page and "id='params'" in page
