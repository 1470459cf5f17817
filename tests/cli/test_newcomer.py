"""What a newcomer trips over (issue 14): one-line errors, quiet pipes, a cheap --help."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from gradlab.cli import main
from gradlab.config import DataConfig
from gradlab.data.datasets import load_split
from gradlab.errors import DatasetError


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("measure", ["cos", "l1"])
def test_unknown_measure_names_the_stored_ones(tmp_path, fake_run, capsys, measure):
    run = fake_run(tmp_path / "r.h5")
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "--measure", measure]) == 2
    line = _one_line(capsys)
    assert f'measure "{measure}" is not stored' in line and "l2 or cosine" in line
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("args, match", [(["--bins", "1"], "--bins must be at least 2"),
                                         (["--perm", "0"], "--perm must be at least 1")])
def test_bins_and_perm_are_checked(tmp_path, fake_run, capsys, args, match):
    run = fake_run(tmp_path / "r.h5")
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), *args]) == 2
    assert match in _one_line(capsys)


def test_scores_random_does_not_contradict_itself(capsys):
    assert main(["scores", "--metrics", "intensity,random", "--dataset", "synthetic", "--subset", "10"]) == 2
    line = _one_line(capsys)
    assert '"random" is a seeded shuffle, not a metric' in line and "choose one of" not in line


def test_scores_help_lists_every_dataset(capsys):
    with pytest.raises(SystemExit):
        main(["scores", "--help"])
    out = capsys.readouterr().out
    for name in ("buildings", "segfolder", "imagefolder", "cifar10-sample", "synthetic"):
        assert name in out


def test_cifar10_without_download_does_not_talk_of_downloading(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_split(DataConfig(dataset="cifar10", root=str(tmp_path), download=False), True)
    msg = str(e.value)
    assert "data.download = false" in msg and "could not be downloaded" not in msg and "download=True" not in msg
    (tmp_path / "cifar-10-batches-py").mkdir()  # present but empty: damaged, not "download it"
    with pytest.raises(DatasetError) as e:
        load_split(DataConfig(dataset="cifar10", root=str(tmp_path), download=True), True)
    assert "incomplete or damaged" in str(e.value) and "download=True" not in str(e.value)


class _ClosedPipe(io.TextIOWrapper):
    """stdout whose reader has gone: every write raises BrokenPipeError, as after `| head -3`."""

    def write(self, s):
        raise BrokenPipeError(32, "Broken pipe")


def test_closed_pipe_ends_quietly(tmp_path, fake_run, monkeypatch, capsys):
    run = fake_run(tmp_path / "r.h5")
    fd = os.open(os.devnull, os.O_WRONLY)
    monkeypatch.setattr(sys, "stdout", _ClosedPipe(os.fdopen(fd, "wb")))
    assert main(["inspect", str(run)]) == 1  # no traceback, no error line
    assert capsys.readouterr().err == ""


def test_inspect_into_head_in_a_real_pipe(tmp_path, fake_run):
    run = fake_run(tmp_path / "r.h5")
    res = subprocess.run(f"{sys.executable} -m gradlab inspect {run} | head -3", shell=True, capture_output=True,
                         text=True)
    assert len(res.stdout.splitlines()) == 3 and "Traceback" not in res.stderr


def test_help_and_argument_errors_import_no_heavy_library():
    code = ("import sys\nfrom gradlab.cli import main\n"
            "for argv in (['--help'], ['run', '--help'], ['report'], ['run']):\n"
            "    try: main(argv)\n    except SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'h5py', 'plotly', 'pandas', 'numpy') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr


def test_log_file_gets_one_line_per_epoch_and_the_next_command(tmp_path):
    """stderr redirected to a file: no progress bars, one plain line per epoch, final numbers."""
    out = tmp_path / "q.h5"
    with open(tmp_path / "err.txt", "w") as err:
        res = subprocess.run([sys.executable, "-m", "gradlab", "run", "studies/quickstart.toml", "--out", str(out),
                              "--no-score-cache", "--set", "data.subset=256", "--set", "data.test_subset=64",
                              "--set", "train.epochs=3", "--set", "train.batch_size=64", "--set", "output.heatmaps=false"],
                             stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0
    assert (tmp_path / "err.txt").read_text() == ""  # no bars
    lines = res.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines if ln.startswith("epoch ")] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert any(ln.startswith("done: ") and "test acc" in ln for ln in lines)
    assert f"next: gradlab report {out} --out {out.with_suffix('.report.html')}" in lines


@pytest.mark.parametrize("spec, want", [("auto", None), (1, 1), (3, 3)])
def test_threads_setting(spec, want, monkeypatch):
    from gradlab.train.accel import resolve_threads

    if spec == "auto":
        from gradlab.train import accel

        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        for busy, threads in ((1.2, 1), (0.1, 2), (5.0, 1)):  # one core busy: one thread
            monkeypatch.setattr(accel, "busy_cores", lambda cores, b=busy: b)
            assert resolve_threads("auto") == threads
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's explicit choice wins over the load
        assert resolve_threads("auto") == 2
    else:
        assert resolve_threads(spec) == want


def test_busy_cores_sees_a_spinning_process_not_the_load_average(monkeypatch):
    """``auto`` measures the cores busy now; the 1-minute load average lags (a run just finished
    still counts there), so it must not be what decides on Linux."""
    import time

    from gradlab.train.accel import busy_cores

    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat here: busy_cores falls back to the load average")
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 7.0, 7.0))  # must be ignored
    quiet = busy_cores(os.cpu_count() or 1)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        loaded = busy_cores(os.cpu_count() or 1, window_s=0.5)
    finally:
        hog.kill()
    cores = os.cpu_count() or 1  # one spinning process is about one more busy core, up to all of them
    assert quiet < 7.0 and loaded >= min(quiet + 0.5, cores - 0.5), (quiet, loaded)


def test_threads_config_errors():
    from gradlab.config import config_from_dict
    from gradlab.errors import ConfigError

    for bad in ("fast", 0, 2.5):
        with pytest.raises(ConfigError, match="train.threads"):
            config_from_dict({"train": {"threads": bad}})
