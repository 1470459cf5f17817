"""Real faults: two writers on one file, a dead writer's lock, a really full disk, flipped
bits in a data chunk, damaged files of every kind, and a simulated full disk."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import gradlab
from gradlab import open_run
from gradlab.cli import main
from gradlab.errors import RunFileError
from gradlab.runfile.lock import lock_path
from gradlab.runfile.writer import RunWriter
from tests.conftest import QUICKSTART_ARGS

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["--no-score-cache", "--set", "data.subset=512", "--set", "data.test_subset=64", "--set", "train.batch_size=64",
        "--set", "output.heatmaps=false", "--set", 'track.probes=["random"]']


def _cli(out: Path, *extra: str, epochs: int = 3, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gradlab", "run", "studies/quickstart.toml", "--out", str(out),
                             "--set", f"train.epochs={epochs}", *TINY, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, **kw)


def _wait_for_lock(out: Path, pid: int, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if lock_path(out).exists() and f"pid {pid} " in lock_path(out).read_text():
            return
        time.sleep(0.05)
    raise AssertionError("the first run never took its lock")


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


@pytest.mark.e2e
def test_second_writer_refuses_and_first_completes(tmp_path):
    out = tmp_path / "x.h5"
    first = _cli(out, epochs=4)
    _wait_for_lock(out, first.pid)
    second = _cli(out, "--overwrite")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and f"is being written by pid {first.pid} on host" in err
    assert first.wait(timeout=300) == 0, first.stderr.read()
    with gradlab.open_run(out) as run:
        assert run.status == "complete" and run.epochs_done == 4 and len(run.distances("random")) == 4 * 8
    resume = _cli(out, "--resume", epochs=5)  # the lock was released: a later writer gets it
    assert resume.wait(timeout=300) == 0


@pytest.mark.e2e
def test_lock_of_a_killed_writer_is_taken_over(tmp_path):
    out = tmp_path / "k.h5"
    first = _cli(out, epochs=50)
    _wait_for_lock(out, first.pid)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = _cli(out, "--overwrite", epochs=2)
    stdout, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert f"took over the lock of {out} from pid {first.pid} on host" in stdout
    with gradlab.open_run(out) as run:
        assert run.status == "complete" and run.epochs_done == 2
    assert lock_path(out).read_text() == ""  # released cleanly


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or 'not permitted'}): the real disk-full test "
                    f"needs root")


@pytest.mark.slow  # 4 CLI runs and a tmpfs: 64 s (load 4, 2 cores); the simulated disk full below stays
@pytest.mark.e2e
def test_real_disk_full_is_one_line_and_resume_completes(tmp_path):
    ref = tmp_path / "ref.h5"
    assert _cli(ref, epochs=3).wait(timeout=300) == 0
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "8m")
    try:
        out = disk / "run.h5"
        assert _cli(out, epochs=1).wait(timeout=300) == 0  # one committed epoch on the small disk
        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # fill it up
        full = _cli(out, "--resume", epochs=3)
        _, err = full.communicate(timeout=300)
        assert full.returncode == 2, err
        assert len(err.strip().splitlines()) == 1 and "disk full" in err and "--resume" in err
        try:  # the writer could not even close the file: readers get one line saying how to go on
            with gradlab.open_run(out) as run:
                assert run.epochs_done == 1  # the committed epoch is kept
        except RunFileError as exc:
            assert "--resume" in str(exc)
        filler.unlink()  # space again: resume completes
        again = _cli(out, "--resume", epochs=3)
        assert again.wait(timeout=300) == 0, again.stderr.read()
        a, b = _datasets(ref), _datasets(out)
        assert sorted(a) == sorted(b)
        for name in a:
            if not name.startswith("timing/"):
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def _chunk_of(path: Path, name: str) -> tuple[int, int]:
    with h5py.File(path) as f:
        ds = f[name]
        assert ds.fletcher32
        info = ds.id.get_chunk_info(0)
        return info.byte_offset, info.size


@pytest.mark.e2e
def test_flipped_bytes_in_a_chunk_are_detected(tmp_path, quickstart_run):
    out = tmp_path / "f.h5"
    shutil.copy(quickstart_run, out)  # the session's shared run (tests/conftest.py): damage a copy
    name = "probes/random/distance_l2"
    offset, size = _chunk_of(out, name)
    with open(out, "r+b") as fh:
        fh.seek(offset)
        # up to 64 bytes inverted inside the data, not the chunk's trailing 4-byte fletcher32 checksum: a
        # chunk inverted whole, checksum included, checks out (one's complements sum to the inverted sums)
        raw = fh.read(min(size - 4, 64))
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in raw))
    with gradlab.open_run(out) as run, pytest.raises(RunFileError, match=f"dataset /{name} is damaged.*checksum"):
        run.distances("random")
    res = subprocess.run([sys.executable, "-m", "gradlab", "report", str(out), "--out", str(tmp_path / "r.html")],
                         capture_output=True, text=True, env=ENV)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "checksum" in res.stderr


def _damage(src: Path, dst: Path, how: str) -> None:
    shutil.copy(src, dst)
    data = bytearray(dst.read_bytes())
    if how == "truncated":
        del data[len(data) // 2:]
    elif how == "garbage header":
        data[:512] = np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes()
    else:  # a damaged object header: the probe group's
        with h5py.File(src) as f:
            addr = h5py.h5o.get_info(f["probes/random"].id).addr
        data[addr:addr + 16] = bytes(16)
    dst.write_bytes(bytes(data))


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["truncated", "garbage header", "damaged object"])
def test_damaged_files_are_one_line_everywhere(tmp_path, quickstart_run, how):
    good = quickstart_run  # the session's shared run (tests/conftest.py): only read, damaged as a copy
    bad = tmp_path / "bad.h5"
    _damage(good, bad, how)
    shutil.copy(good.with_suffix(".ckpt.pt"), bad.with_suffix(".ckpt.pt"))
    for cmd in (["inspect", str(bad)], ["report", str(bad), "--out", str(tmp_path / "r.html")]):
        res = subprocess.run([sys.executable, "-m", "gradlab", *cmd], capture_output=True, text=True, env=ENV)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, (cmd, res.stderr)
        assert str(bad) in res.stderr and "Traceback" not in res.stderr
    with pytest.raises(RunFileError, match=str(bad)):
        with gradlab.open_run(bad) as run:
            run.distances("random")
    res = subprocess.Popen([sys.executable, "-m", "gradlab", "run", "studies/quickstart.toml", "--out", str(bad),
                            "--resume", *QUICKSTART_ARGS, "--set", "train.epochs=4"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _, err = res.communicate(timeout=300)
    assert res.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "--overwrite" in err and "restore" in err


# ---------------------------------------------------------------------------------- disk full, simulated

@pytest.mark.e2e
def test_disk_full_is_one_line_and_keeps_committed_epochs(tiny, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = RunWriter.write_pending

    def full(self):
        if self._pending:
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(self)
    monkeypatch.setattr(RunWriter, "write_pending", full)
    out = tmp_path / "full.h5"
    rc = main(["run", "studies/quickstart.toml", "--quiet", "--out", str(out), "--set", "data.subset=128",
               "--set", "data.test_subset=64", "--set", "train.epochs=2", "--set", "train.batch_size=64",
               "--set", "output.heatmaps=false", "--set", "train.device=\"cpu\""])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disk full" in err and "--resume" in err
    with open_run(out) as run:
        assert run.status == "failed" and run.epochs_done == 1 and "disk full" in run.failure
    monkeypatch.undo()
    assert main(["run", "studies/quickstart.toml", "--quiet", "--out", str(out), "--resume",
                 "--set", "data.subset=128", "--set", "data.test_subset=64", "--set", "train.epochs=2",
                 "--set", "train.batch_size=64", "--set", "output.heatmaps=false",
                 "--set", "train.device=\"cpu\""]) == 0
    with open_run(out) as run:
        assert run.status == "complete" and run.epochs_done == 2
