"""A run file open in h5py or xarray in the same process opens in gradlab too, and the other
way round (HDF5 shares one open file per process and wants equal file-locking flags)."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

import gradlab
from gradlab.cli import main
from gradlab.errors import RunFileError
from gradlab.report.export import export
from gradlab.report.inspect import describe
from gradlab.runfile.writer import open_h5

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")
pytest.importorskip("pyarrow")

GROUP = "probes/random"


def _xr(path):
    return xr.open_dataset(path, engine="h5netcdf", group=GROUP)


def _gradlab_reads(path, tmp, tag):
    """Everything gradlab reads a run with, checked against the API: distances, to_xarray,
    inspect and the parquet export."""
    with gradlab.open_run(path) as run:
        d = run.distances("random", None)
        assert len(d) == run.epochs_done * run.num_batches("random") > 0
        x = run.to_xarray("random")
        np.testing.assert_array_equal(x.distance_l2.values, run.distance_matrix("random"))
    assert "status complete" in describe(path)
    files = {p.stem: p for p in export(path, tmp / tag, "parquet")}
    got = pd.read_parquet(files["distances"])
    got = got[got.probe == "random"].drop(columns="probe").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[d.columns.tolist()], d.reset_index(drop=True), check_dtype=False)
    return d


@pytest.mark.parametrize("first", ["xarray", "h5py", "gradlab"])
def test_run_opens_beside_h5py_and_xarray(first, fake_run, tmp_path):
    path = fake_run(tmp_path / "run.h5", epochs=3)
    with gradlab.open_run(path) as run:  # the file on its own, for comparison
        want = run.distance_matrix("random")
    if first == "xarray":
        ds = _xr(path)
        try:
            d = _gradlab_reads(path, tmp_path, first)
            np.testing.assert_array_equal(ds.distance_l2.values[:3], want)  # xarray still reads
        finally:
            ds.close()
    elif first == "h5py":
        with h5py.File(path, "r") as f:  # h5py's default flags
            d = _gradlab_reads(path, tmp_path, first)
            np.testing.assert_array_equal(f["probes/random/distance_l2"][:3], want)
    else:  # gradlab first, then xarray and h5py with their defaults
        with gradlab.open_run(path) as run:
            with _xr(path) as ds:
                np.testing.assert_array_equal(ds.distance_l2.values[:3], run.distance_matrix("random"))
            with h5py.File(path, "r") as f:
                np.testing.assert_array_equal(f["probes/random/distance_l2"][:3], want)
            d = _gradlab_reads(path, tmp_path, first)
    np.testing.assert_array_equal(d.pivot(index="epoch", columns="batch", values="l2").to_numpy(), want)


@pytest.mark.slow
def test_report_beside_open_xarray(fake_run, tmp_path, capsys):
    path = fake_run(tmp_path / "run.h5", epochs=3)
    with _xr(path):
        assert main(["report", str(path), "--out", str(tmp_path / "r.html"), "--perm", "10"]) == 0
    assert (tmp_path / "r.html").stat().st_size > 0


def test_handle_with_other_flags_is_never_called_damage(fake_run, tmp_path):
    """A read/write handle open in this process cannot be shared by a reader: the message says
    so, names the fix, and does not call the file damaged."""
    path = fake_run(tmp_path / "run.h5", epochs=2)
    with h5py.File(path, "r") as f:  # read-only default handle; HDF5 refuses a second read/write one
        with pytest.raises(OSError):
            h5py.File(path, "r+")
        assert f.attrs["status"]
    with h5py.File(path, "r", fs_strategy=None, locking=True) as f:  # locking flags gradlab does not try first
        with gradlab.open_run(path) as run:
            assert run.epochs_done == 2
    from gradlab.runfile import swmr

    orig = swmr.READ_LOCKINGS
    try:
        swmr.READ_LOCKINGS = (None,)  # a reader allowed only the default: the mismatch must be named as such
        with h5py.File(path, "r", locking=False):
            with pytest.raises(RunFileError) as info:
                open_h5(path)
    finally:
        swmr.READ_LOCKINGS = orig
    msg = str(info.value)
    assert "\n" not in msg and "open elsewhere" in msg and "intact" in msg
    assert "damaged" not in msg and "restore" not in msg
