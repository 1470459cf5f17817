"""Run reader: tidy DataFrames, committed epochs only, schema versions, inspect."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from gradlab import open_run
from gradlab.runfile import schema as schema_mod
from gradlab.cli import main
from gradlab.errors import RunFileError


def test_tidy_frames_match_stored_arrays(tmp_path, fake_run):
    path = fake_run(tmp_path / "r.h5", epochs=4, milestones=(2,), batches=8, layers=3)
    with open_run(path) as run, h5py.File(path, "r") as f:  # the flags gradlab reads with (h5py's defaults)
        assert run.epochs_done == 4 and run.probes == ["intensity", "random"]
        assert run.provenance["gradlab_version"] == "test" and run.config["train"]["milestones"] == [2]
        d = run.distances("intensity", measure=None)
        assert list(d.columns) == ["epoch", "phase", "batch", "batch_score", "cosine", "l2"]
        np.testing.assert_array_equal(d.l2.to_numpy().reshape(4, 8), f["probes/intensity/distance_l2"][()])
        np.testing.assert_array_equal(d.cosine.to_numpy().reshape(4, 8), f["probes/intensity/distance_cosine"][()])
        assert d.phase.tolist() == [0] * 16 + [1] * 16
        np.testing.assert_array_equal(d.batch_score[:8], f["probes/intensity/batch_score"][()])
        old = run.distances("intensity", "cosine")  # the original signature still works
        np.testing.assert_array_equal(old.distance, d.cosine)
        with pytest.raises(KeyError, match="measure 'l1' not stored"):
            run.distances("intensity", "l1")
        lay = run.layer_distances("random")
        assert len(lay) == 4 * 8 * 3 and set(lay.kind) == {"conv.weight"}
        ref = f["probes/random/layer_distance_l2"][()]
        row = lay[(lay.epoch == 2) & (lay.batch == 5) & (lay.layer == "l1.weight")]
        assert row.distance.item() == ref[2, 5, 1] and row.numel.item() == 12
        nm = run.norms("intensity")
        np.testing.assert_array_equal(nm.batch_norm.to_numpy().reshape(4, 8), f["probes/intensity/batch_norm"][()])
        np.testing.assert_array_equal(nm.full_norm.to_numpy()[::8], f["probes/intensity/full_norm"][()])
        np.testing.assert_array_equal(run.batch_loss("random").batch_loss.to_numpy().reshape(4, 8),
                                      f["probes/random/batch_loss"][()])
        ns = run.noise_scale()
        assert ns.probe.tolist() == ["intensity"] * 4 + ["random"] * 4
        np.testing.assert_array_equal(ns.noise_scale[:4], f["probes/intensity/noise_scale"][()])
        c = run.train_curves()
        np.testing.assert_array_equal(c.test_acc, f["test/acc"][()])
        assert not run.has_param_stats


def test_reads_only_committed_epochs_of_a_run_being_written(tmp_path, fake_run):
    path = fake_run(tmp_path / "live.h5", epochs=5, commit=3, extra_rows=2, status="running", milestones=(2, 4))
    with h5py.File(path, "r") as f:
        assert f["probes/intensity/distance_l2"].shape[0] == 5 and f.attrs["epochs_done"] == 3
    with open_run(path) as run:
        assert run.status == "running" and run.epochs_done == 3 and run.num_phases == 2
        for df in (run.distances("intensity", None), run.layer_distances("intensity"), run.norms("random"),
                   run.batch_loss("random"), run.noise_scale(), run.train_curves()):
            assert df.epoch.max() == 2, df.columns
        assert run.distance_matrix("random").shape == (3, 20)
        assert list(run.phase_epochs(1)) == [2]


def _set_schema(path, value):
    with h5py.File(path, "r+") as f:
        f.attrs["schema"] = value


def test_newer_schema_is_refused_with_upgrade_hint(tmp_path, fake_run, capsys):
    path = fake_run(tmp_path / "new.h5", epochs=2)
    _set_schema(path, f"gradlab.run/{schema_mod.CURRENT + 1}")
    with pytest.raises(RunFileError, match="newer than this gradlab reads.*upgrade gradlab"):
        open_run(path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "upgrade gradlab" in err


def test_older_schema_without_migration_is_refused(tmp_path, fake_run):
    path = fake_run(tmp_path / "old.h5", epochs=2)
    _set_schema(path, "gradlab.run/0")
    with pytest.raises(RunFileError, match="no longer reads.*re-run the study"):
        open_run(path)
    _set_schema(path, "gradlab.run/x")
    with pytest.raises(RunFileError, match="unknown schema"):
        open_run(path)


def test_older_schema_is_migrated_on_read(tmp_path, fake_run, monkeypatch):
    """A constructed /0 file (distances under the old name ``D``, no noise scale) opens as the current
    schema through the chain /0 -> /1 (registered here) -> /2."""
    path = fake_run(tmp_path / "v0.h5", epochs=3)
    with h5py.File(path, "r+") as f:
        f.attrs["schema"] = "gradlab.run/0"
        for p in ("intensity", "random"):
            f.move(f"probes/{p}/distance_l2", f"probes/{p}/D")
            del f[f"probes/{p}/noise_scale"]
        expected = f["probes/intensity/D"][()]
    before = path.read_bytes()

    def v0_to_v1(src: h5py.File, dst: h5py.File) -> None:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name in src:
            src.copy(src[name], dst, name)
        for p in dst["probes"]:
            dst.move(f"probes/{p}/D", f"probes/{p}/distance/l2")  # the /1 layout
            dst[f"probes/{p}/noise_scale"] = np.full(src.attrs["epochs_done"], np.nan)

    monkeypatch.setitem(schema_mod.MIGRATIONS, 0, v0_to_v1)
    with open_run(path) as run:
        assert run.f.attrs["schema"] == f"gradlab.run/{schema_mod.CURRENT}"
        assert run.f.attrs["migrated_from"] == "gradlab.run/0"
        np.testing.assert_array_equal(run.distance_matrix("intensity", "l2"), expected)
        assert run.measures("intensity") == ["cosine", "l2"]
        assert run.noise_scale().noise_scale.isna().all()
    assert path.read_bytes() == before  # the file on disk is never modified

    def broken(src, dst):
        raise KeyError("probes")

    monkeypatch.setitem(schema_mod.MIGRATIONS, 0, broken)
    with pytest.raises(RunFileError, match=f"migrating schema gradlab.run/0 to gradlab.run/{schema_mod.CURRENT} failed"):
        open_run(path)


def test_inspect_shows_status_failure_shapes_config(tmp_path, fake_run, capsys):
    path = fake_run(tmp_path / "failed.h5", epochs=3, status="failed", batches=8)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "failed.h5: status failed, 3 of 3 epoch(s) committed" in out
    assert "failure      RuntimeError: boom" in out
    assert "intensity: 8 batches of 8" in out and "random: 8 batches of 8, batch number" in out
    assert "probes/intensity/distance_l2" in out and "[3, 8]" in out and "[3, 8, 3]" in out
    assert "[train] batch_size = 8" in out and "gradlab_version" in out
