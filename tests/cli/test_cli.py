from __future__ import annotations

import h5py
import numpy as np
import pytest

from gradlab import open_run
from gradlab.cli import main


@pytest.mark.e2e
def test_quickstart_writes_readable_run(quickstart_run, capsys):
    """``gradlab run studies/quickstart.toml`` shrunk: the session's shared quickstart_run (tests/conftest.py)."""
    out = quickstart_run
    with open_run(out) as run:
        assert run.status == "complete" and run.epochs_done == 3
        assert run.probes == ["intensity", "random"]
        df = run.distances("intensity", "l2")
        assert len(df) == 3 * 4 and set(df.phase) == {0, 1, 2}
        assert np.all(np.isfinite(df.distance)) and np.all(df.distance > 0)
        assert np.all(np.diff(run.batch_scores("intensity")) >= 0)  # sorted ascending
        assert run.provenance["torch_version"] and run.provenance["seed"] == 0
    html = out.with_suffix(".html").read_text()
    import re

    assert not re.search(r"<script[^>]+src=", html)  # nothing fetched: plotly.js is inlined
    assert len(html) > 1_000_000 and "Plotly.newPlot" in html
    assert main(["inspect", str(out)]) == 0
    assert "status complete" in capsys.readouterr().out


def test_existing_output_is_an_error(tmp_path, capsys):
    out = tmp_path / "x.h5"
    out.write_bytes(b"")
    assert main(["run", "studies/quickstart.toml", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_bad_key_one_line_error(capsys):
    assert main(["run", "studies/quickstart.toml", "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'did you mean "train.epochs"' in err


def test_inspect_rejects_non_run(tmp_path, capsys):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    assert main(["inspect", str(tmp_path / "other.h5")]) == 2
    assert "not a gradlab run" in capsys.readouterr().err


@pytest.mark.parametrize("args, msg", [
    (["--set", "train.bach_size=3"], 'did you mean "train.batch_size"'),
    (["--set", "train.epochs=\"three\""], "train.epochs must be an integer"),
    (["--set", "train.on_nonfinite=skip"], "train.on_nonfinite must be one of"),
    (["--set", "data.dataset=cifar10", "--set", "data.download=false", "--set", "data.root=/nonexistent/x"],
     "CIFAR-10"),
])
def test_cli_bad_input_is_one_line(args, msg, tmp_path, capsys):
    rc = main(["run", "studies/quickstart.toml", "--quiet", "--out", str(tmp_path / "x.h5"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and msg in err, err


def test_cli_non_gradlab_file(tmp_path, capsys):
    for content in (b"not hdf5 at all", None):
        p = tmp_path / "other.h5"
        if content is None:
            with h5py.File(p, "w") as f:
                f["x"] = 1
        else:
            p.write_bytes(content)
        assert main(["inspect", str(p)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("not a gradlab run" in err or "not a readable HDF5 file" in err)
