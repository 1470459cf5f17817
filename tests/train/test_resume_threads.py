"""--resume with train.threads = "auto" continues with the thread count the run recorded
(cpu_threads), so a resumed run equals an uninterrupted one without pinning OMP_NUM_THREADS.
The load of the machine is set through auto's own measurement (busy cores), so that the resume
would pick another count than the run it continues: a real, controlled "different load"."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gradlab.train.accel as accel
from gradlab import open_run
from gradlab.runfile.writer import RunWriter
from gradlab.train.runner import Runner
from tests.train.test_resume import assert_identical  # every dataset but /timing, bit for bit

ROOT = Path(__file__).resolve().parents[2]
CORES = os.cpu_count() or 1
SMALL = {"subset": 64, "test_subset": 32}
FAST = {"probes": ["random"], "param_stats": "off"}
pytestmark = pytest.mark.skipif(CORES < 2, reason="needs 2 cores: auto must be able to pick two different counts")


class Boom(Exception):
    pass


@pytest.fixture
def unpinned(monkeypatch):
    """No OMP_NUM_THREADS: auto decides from the busy cores; torch's count restored afterwards."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield lambda busy: monkeypatch.setattr(accel, "busy_cores", lambda cores, window_s=0.3: float(busy))
    torch.set_num_threads(before)


@pytest.mark.slow
def test_resumed_run_with_auto_equals_the_uninterrupted_one(tiny, unpinned, monkeypatch):
    cfg = tiny(data=SMALL, train={"epochs": 3, "threads": "auto"}, track=FAST)
    ref = tiny(data=SMALL, train={"epochs": 3, "threads": "auto"}, track=FAST,
               output={"path": str(Path(cfg.output.path).parent / "ref.h5")})
    unpinned(0)  # an idle machine: auto takes every core
    Runner(ref, progress=False, log=lambda m: None).run()
    with open_run(ref.output.path) as run:
        assert int(run.f.attrs["cpu_threads"]) == CORES
    real_commit = RunWriter.commit

    def crash(self, epoch):
        if epoch == 1:
            raise Boom("killed before the marker of epoch 1")
        real_commit(self, epoch)

    monkeypatch.setattr(RunWriter, "commit", crash)
    with pytest.raises(Boom):
        Runner(cfg, progress=False, log=lambda m: None).run()
    monkeypatch.setattr(RunWriter, "commit", real_commit)
    unpinned(CORES - 1)  # a busy machine now: auto alone would take 1 thread
    assert accel.resolve_threads("auto") == 1
    said: list[str] = []
    Runner(cfg, progress=False, log=said.append, resume=True).run()
    assert torch.get_num_threads() == CORES
    assert any(f"uses the {CORES} CPU thread(s)" in line for line in said)
    with open_run(cfg.output.path) as run:
        assert run.status == "complete" and run.epochs_done == 3 and int(run.f.attrs["cpu_threads"]) == CORES
    assert_identical(Path(ref.output.path), Path(cfg.output.path))


def test_resume_with_auto_takes_the_recorded_threads_and_explicit_ones_as_given(tiny, unpinned):
    cfg = tiny(data=SMALL, train={"epochs": 1, "threads": "auto"}, track=FAST)
    unpinned(0)
    Runner(cfg, progress=False, log=lambda m: None).run()
    unpinned(CORES - 1)  # busier now: a fresh auto takes 1 thread, the resume the run's own count
    cfg_more = tiny(data=SMALL, train={"epochs": 2, "threads": "auto"}, track=FAST)
    said: list[str] = []
    r = Runner(cfg_more, progress=False, log=said.append, resume=True)  # threads are set when the study is built
    r.lock.release()
    assert torch.get_num_threads() == CORES and any(f"uses the {CORES} CPU thread(s)" in s for s in said)
    r = Runner(tiny(data=SMALL, train={"epochs": 2, "threads": "auto"}, track=FAST), progress=False,
               log=lambda m: None, overwrite=True)
    r.lock.release()
    assert torch.get_num_threads() == 1  # not a resume: auto measures
    cfg2 = tiny(data=SMALL, train={"epochs": 2, "threads": 1}, track=FAST)  # train.threads may change on resume
    Runner(cfg2, progress=False, log=lambda m: None, resume=True).run()
    assert torch.get_num_threads() == 1


# ------------------------------------------------------------------------- kill -9, real processes

STUDY = """
[data]
dataset = "synthetic"
subset = 256
test_subset = 64
[model]
name = "smallcnn"
[train]
epochs = 4
batch_size = 32
lr = 0.05
milestones = [2]
device = "cpu"
seed = 5
threads = "auto"
[track]
probes = ["intensity", "random"]
[output]
heatmaps = false
"""

# gradlab's CLI in a process whose "auto" sees FAKE_BUSY busy cores (the machine's load, set)
CLI = ("import os, sys, gradlab.train.accel as a; "
       "a.busy_cores = lambda cores, window_s=0.3: float(os.environ['FAKE_BUSY']); "
       "from gradlab.cli import main; sys.exit(main(sys.argv[1:]))")


def _cli(study: Path, out: Path, busy: int, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(PYTHONPATH=str(ROOT), FAKE_BUSY=str(busy))
    return subprocess.Popen([sys.executable, "-c", CLI, "run", str(study), "--out", str(out), "--quiet", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _committed(out: Path) -> int:
    try:
        with open_run(out) as run:
            return run.epochs_done
    except Exception:  # noqa: BLE001 - still being created
        return 0


@pytest.mark.slow
def test_sigkilled_run_resumed_under_another_load_equals_the_uninterrupted_one(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text(STUDY)
    ref, out = tmp_path / "ref.h5", tmp_path / "run.h5"
    p_ref = _cli(study, ref, 0)
    assert p_ref.wait(timeout=600) == 0, p_ref.stderr.read()
    p = _cli(study, out, 0)  # started on an idle machine: every core
    t0 = time.monotonic()
    while _committed(out) < 1:
        assert p.poll() is None and time.monotonic() - t0 < 600, "the run ended before the kill"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert _committed(out) < 4
    again = _cli(study, out, CORES - 1, "--resume")  # now the machine is busy: auto would take 1 thread
    stdout, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    with open_run(out) as run:
        assert run.status == "complete" and int(run.f.attrs["resumes"]) == 1
        assert int(run.f.attrs["cpu_threads"]) == CORES
    assert_identical(ref, out)
