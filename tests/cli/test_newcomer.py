"""What a newcomer trips over (issue 14): one-line errors, quiet pipes, a cheap --help."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from gradlab.cli import main


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


@pytest.mark.e2e
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
