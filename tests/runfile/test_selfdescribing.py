"""The run file describes itself: named dimensions, units and descriptions (issue 16).

Checked on a real (tiny) run written by the runner, on hand-built files of the old schema
and through the tools a collaborator would use without gradlab: h5py attributes, xarray
(h5netcdf engine) and CSV/Parquet tables read back with pandas.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gradlab.cli import main
from gradlab.runfile import annotate, names
from gradlab.runfile.reader import open_run
from gradlab.runfile.writer import RunWriter
from gradlab.track.layout import ParamLayout

DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"
IN_QUICKSTART = ("always", "per_layer", "param_stats", "keep_grads")  # options the fixture's run turns on


@pytest.fixture
def quickstart(bn_run) -> Path:
    """A tiny study like the quickstart, with per-layer distances, parameter statistics and kept grads:
    the session's shared bn_run (tests/conftest.py), read only."""
    return bn_run


def _datasets(path: Path) -> dict[str, tuple[tuple[int, ...], dict, list[str], list[int]]]:
    """name -> (shape, attrs, dimension labels, scales attached per axis), read with plain h5py."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.shape, dict(obj.attrs), [d.label for d in obj.dims], [len(d) for d in obj.dims])
        f.visititems(visit)
    return out


@pytest.mark.e2e
def test_every_dataset_has_description_units_and_named_dimensions(quickstart):
    found = _datasets(quickstart)
    assert len(found) > 40 and "probes/intensity/grads/epoch_1" in found and "params/mean" in found
    for name, (shape, attrs, labels, attached) in found.items():
        meta = annotate.lookup(name)
        assert meta is not None, name
        assert attrs.get("description") == meta.description and len(meta.description) > 10, name
        assert attrs.get("units") == meta.units or (meta.units is None and "units" not in attrs), name
        assert tuple(labels) == meta.dims_of(len(shape)), (name, labels)
        own_scale = attrs.get("CLASS") == b"DIMENSION_SCALE"
        assert own_scale or all(n == 1 for n in attached), (name, attached)  # each axis has its scale
    assert found["probes/intensity/distance_l2"][1]["units"] == "loss units per parameter"
    assert found["probes/intensity/distance_cosine"][1]["units"] == "1"
    with h5py.File(quickstart, "r") as f:  # the scales hold the coordinate values
        np.testing.assert_array_equal(f[names.EPOCH][()], np.arange(f.attrs["epochs_done"]))
        assert [s.decode() for s in f[names.LAYER][()]] == [s.decode() for s in f[names.LAYER_NAME][()]]
        d = f[names.distance("intensity", "l2")]
        assert d.dims[0][0].name == "/epoch" and d.dims[1][0].name == "/probes/intensity/batch"
        assert f[names.layer_distance("intensity")].dims[2][0].name == "/layer"
        assert f[names.PARAM_MEAN].dims[0][0].name == "/params/step"


@pytest.mark.e2e
def test_file_reads_in_hdf5_1_10_tools(quickstart):
    """Scale references use the pre-1.12 encoding (HDF5 1.10 tools cannot read the new one), and,
    where Debian's h5dump is installed, ``h5dump -A`` prints every attribute and exits 0."""
    with h5py.File(quickstart, "r") as f:
        scales = [n for n, (_, attrs, _, _) in _datasets(quickstart).items() if "REFERENCE_LIST" in attrs]
        assert {"epoch", "layer", "params/step", "probes/random/batch"} <= set(scales)
        for n in scales:
            ref = f[n].attrs.get_id("REFERENCE_LIST").get_type().get_member_type(0)
            assert ref.equal(h5py.h5t.STD_REF_OBJ), n
    if shutil.which("h5dump") is None:
        pytest.skip("h5dump not installed (apt-get install hdf5-tools)")
    out = subprocess.run(["h5dump", "-A", str(quickstart)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-500:]
    assert '"DIMENSION_SCALE"' in out.stdout and "Euclidean distance: L2 norm of g_k - G_e" in out.stdout


def _doc_patterns() -> dict[str, str]:
    """Dataset pattern -> "present" column of the run-file table in docs/design.md."""
    text = DESIGN.read_text()
    block = text[text.index("<!-- annotate:begin -->"):text.index("<!-- annotate:end -->")]
    rows = [r for r in block.splitlines() if r.startswith("| `/")]
    return {re.match(r"\| `/([^`]+)`", r).group(1): r.rstrip(" |").rsplit("| ", 1)[1] for r in rows}


@pytest.mark.e2e
def test_design_document_lists_exactly_the_datasets_of_a_run(quickstart):
    text = DESIGN.read_text()
    assert annotate.markdown_table() in text, "regenerate the table: python docs/gen_reference.py"
    doc = _doc_patterns()
    regex = {p: annotate._regex(p) for p in doc}
    found = _datasets(quickstart)
    for name in found:  # every dataset of the file is documented
        assert any(rx.fullmatch(name) for rx in regex.values()), f"/{name} is not in docs/design.md"
    for pattern, present in doc.items():  # and every documented dataset this run should have is there
        if present in IN_QUICKSTART:
            assert any(regex[pattern].fullmatch(n) for n in found), f"/{pattern} documented but not written"
    assert "probes/<o>/grads/epoch_<e>" in doc and doc["test/miou"] == "segmentation"


@pytest.mark.e2e
def test_xarray_opens_a_probe_as_a_labelled_dataset(quickstart):
    with open_run(quickstart) as run:
        d = run.distance_matrix("intensity", "l2")
        lay = run.layers().layer.tolist()
        scores = run.batch_scores("intensity")
        steps = run.param_stats(["mean"]).step.unique()
        mine = run.to_xarray("intensity")
    with xr.open_dataset(quickstart, engine="h5netcdf", group="probes/intensity") as ds:
        assert ds.distance_l2.dims == ("epoch", "batch")
        assert ds.layer_distance_l2.dims == ("epoch", "batch", "layer")
        np.testing.assert_array_equal(ds.distance_l2.values, d)
        np.testing.assert_array_equal(ds.batch_score.values, scores)  # a coordinate, via CF "coordinates"
        assert "batch_score" in ds.coords and ds.distance_cosine.attrs["units"] == "1"
        assert ds.full_norm.attrs["description"].startswith("L2 norm of G_e")
        xr.testing.assert_equal(ds.distance_l2.reset_coords(drop=True), mine.distance_l2.reset_coords(drop=True)
                                .drop_vars("epoch"))
    with xr.open_datatree(quickstart, engine="h5netcdf") as tree:  # root coordinates are inherited
        assert tree["probes/intensity"].layer.values.tolist() == lay
    with xr.open_dataset(quickstart, engine="h5netcdf", group="params") as ps:
        assert ps["mean"].dims == ("step", "layer")
        np.testing.assert_array_equal(ps.step.values, steps)
    assert mine.layer.values.tolist() == lay and mine.distance_l2.attrs["units"] == "loss units per parameter"


def test_to_xarray_keeps_only_committed_epochs(tmp_path, fake_run):
    path = fake_run(tmp_path / "live.h5", epochs=4, commit=3, extra_rows=1, status="running", batches=6)
    with xr.open_dataset(path, engine="h5netcdf", group="probes/random") as raw:
        assert raw.sizes["epoch"] == 4  # raw xarray sees the uncommitted row
        with h5py.File(path, "r") as f:
            done = int(f.attrs["epochs_done"])
        cut = raw.isel(epoch=slice(0, done)).load()  # the recipe of docs/tutorials/analysis.md
    with open_run(path) as run:
        ds = run.to_xarray("random")
        np.testing.assert_array_equal(ds.distance_l2.values, run.distance_matrix("random", "l2"))
    assert done == 3 and ds.sizes["epoch"] == 3 and ds.attrs["epochs_done"] == 3
    np.testing.assert_array_equal(ds.epoch.values, [0, 1, 2])
    np.testing.assert_array_equal(cut.distance_l2.values, ds.distance_l2.values)
    assert ds.layer_distance_l2.dims == ("epoch", "batch", "layer") and ds.sizes["layer"] == 3


def _expected_tables(path: Path) -> dict[str, pd.DataFrame]:
    """The export's tables, built here from Run's methods (the columns a user of the pandas API sees)."""
    with open_run(path) as run:
        def per_probe(f):
            return pd.concat([f(p).assign(probe=p) for p in run.probes], ignore_index=True)
        lay = per_probe(lambda p: run.layer_distances(p).assign(measure="l2"))
        return {
            "distances": per_probe(lambda p: run.distances(p, None)),
            "layer_distances": lay,
            "norms": per_probe(run.norms),
            "noise_scale": run.noise_scale(),
            "train_curves": run.train_curves(),
            "param_stats": run.param_stats(),
            "batch_quantities": per_probe(run.batch_table),
            "epoch_quantities": per_probe(run.epoch_table),
            "quantities": per_probe(run.quantities),
        }


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_tables_read_back_equal_to_run_frames(quickstart, tmp_path, fmt, capsys):
    out = tmp_path / fmt
    assert main(["export", str(quickstart), "--format", fmt, "--out", str(out)]) == 0
    assert f"9 {fmt} tables" in capsys.readouterr().out
    for name, want in _expected_tables(quickstart).items():
        path = out / f"{name}.{fmt}"
        got = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
        assert len(want) > 0 and sorted(got.columns) == sorted(want.columns), name
        if "probe" in want:
            assert list(got.columns[:1]) == ["probe"]
        got = got[want.columns]
        if fmt == "parquet":  # binary: identical, dtypes included
            pd.testing.assert_frame_equal(got, want)
        else:  # text: float32 columns come back as float64 of their shortest decimal form
            pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-6)


def test_export_refuses_unknown_format(tmp_path, fake_run):
    from gradlab.errors import GradlabError
    from gradlab.report.export import export

    with pytest.raises(GradlabError, match="use one of csv, parquet"):
        export(fake_run(tmp_path / "r.h5", epochs=1), tmp_path / "x", "xlsx")


def _write_schema1(path: Path, epochs: int = 3, k: int = 4, layers: int = 2) -> dict[str, np.ndarray]:
    """A gradlab.run/1 file as the previous gradlab wrote it: distances under distance/<m>, no scales."""
    rng = np.random.default_rng(0)
    arrays = {"l2": rng.uniform(1, 2, (epochs, k)), "cosine": rng.uniform(0, 1, (epochs, k)),
              "layer": rng.uniform(0, 1, (epochs, k, layers))}
    s = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs.update({"schema": "gradlab.run/1", "config": json.dumps({"train": {"milestones": []}}),
                        "status": "complete", "epochs_done": epochs, "run_id": "x"})
        f["layers/name"] = np.array([f"l{i}" for i in range(layers)], dtype=object).astype(s)
        f["layers/kind"] = np.array(["conv.weight"] * layers, dtype=object).astype(s)
        f["layers/numel"] = np.full(layers, 4)
        f["train/lr"], f["train/phase"] = np.full(epochs, 0.1), np.zeros(epochs, dtype=np.int64)
        g = f.create_group("probes/intensity")
        g["index"], g["batch_score"] = np.arange(k * 2), np.linspace(0, 1, k)
        g["distance/l2"], g["distance/cosine"] = arrays["l2"], arrays["cosine"]
        g["layer_distance/l2"] = arrays["layer"]
        g["batch_norm"], g["full_norm"], g["noise_scale"] = arrays["l2"] + 1, np.ones(epochs), np.ones(epochs)
    return arrays


def test_schema1_file_still_reads(tmp_path):
    path = tmp_path / "v1.h5"
    arrays = _write_schema1(path)
    before = path.read_bytes()
    with open_run(path) as run:
        assert run.f.attrs["migrated_from"] == "gradlab.run/1" and "distance_<m>" in run.f.attrs["migration"]
        assert run.measures("intensity") == ["cosine", "l2"]
        np.testing.assert_array_equal(run.distance_matrix("intensity", "cosine"), arrays["cosine"])
        np.testing.assert_array_equal(run.layer_distances("intensity").distance.to_numpy(),
                                      arrays["layer"].reshape(-1))
        ds = run.to_xarray("intensity")  # labels come from the table, not from the (absent) scales
    assert ds.distance_l2.dims == ("epoch", "batch") and ds.layer.values.tolist() == ["l0", "l1"]
    np.testing.assert_array_equal(ds.distance_l2.values, arrays["l2"])
    assert path.read_bytes() == before


def test_writer_annotates_optional_datasets(tmp_path):
    """Sketches, user scalars and raw gradients get their dimensions too (scales made on demand)."""
    layout = ParamLayout(("w", "b"), ((3, 2), (3,)), ("linear.weight", "bias"))
    w = RunWriter(tmp_path / "o.h5", {}, {}, layout)
    w.add_probe("p", np.arange(6), np.array([0.5, 0.7]), "score", 3)
    for e in range(2):
        w.append(names.sketch("p"), np.ones((2, 5)), e)
        w.append(names.scalar("grad_clip"), 1.0, e)
        w.write_grads(names.grads("p", e), __import__("torch").ones(2, 9))
        w.commit(e)
    w.close("complete")
    found = _datasets(tmp_path / "o.h5")
    assert found["probes/p/sketch"][2] == ["epoch", "batch", "sketch_bin"]
    assert found["user/grad_clip"][2] == ["epoch"] and found["parameter"][0] == (9,)
    assert found["probes/p/grads/epoch_1"][2] == ["batch", "parameter"] and found["epoch"][0] == (2,)
    with xr.open_dataset(tmp_path / "o.h5", engine="h5netcdf", group="probes/p") as ds:
        assert ds.sketch.dims == ("epoch", "batch", "sketch_bin") and ds.batch_score.values.tolist() == [0.5, 0.7]
