from __future__ import annotations

import pytest

from gradlab import open_run
from gradlab.cli import main
from gradlab.config import load_config
from gradlab.errors import ConfigError
from gradlab.train.variants import read_variants, variant_configs, variant_path

STUDY = """
[data]
dataset = "synthetic"
subset = 64
test_subset = 32
[model]
name = "smallcnn"
[train]
epochs = 1
batch_size = 32
milestones = []
device = "cpu"
[track]
enabled = false
[output]
path = "{out}"
heatmaps = false
[variants]
bn = []
"agc.lr0.01" = ["model.norm=agc", "train.lr=0.01"]
"""


def _study(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(STUDY.format(out=(tmp_path / "r.h5").as_posix()))
    return p


def test_shipped_studies_parse():
    wm = read_variants("studies/weight_mechanism.toml")
    assert list(wm) == ["baseline", "alpha0.1", "alpha0.5", "beta0.1"]
    cfgs = dict(variant_configs("studies/weight_mechanism.toml", ["all"]))
    assert cfgs["alpha0.1"].model.series_weight == 0.1 and cfgs["beta0.1"].model.parallel_weight == 0.1
    assert cfgs["baseline"].output.path.endswith("weight_mechanism-baseline.h5")
    agc = dict(variant_configs("studies/agc_vs_bn.toml", ["all"]))
    assert agc["agc"].model.norm == "agc" and agc["bn"].model.norm == "bn"
    assert load_config("studies/agc_vs_bn.toml").model.norm == "bn"  # base config ignores the table


def test_variant_errors(tmp_path):
    p = _study(tmp_path)
    with pytest.raises(ConfigError, match="unknown variant"):
        variant_configs(p, ["nope"])
    bad = tmp_path / "bad.toml"
    bad.write_text('[variants]\nx = "model.norm=agc"\n')
    with pytest.raises(ConfigError, match="list of"):
        read_variants(bad)
    assert variant_path("runs/a.h5", "v1") == "runs/a-v1.h5"


def test_cli_runs_all_variants(tmp_path, capsys):
    p = _study(tmp_path)
    assert main(["run", str(p), "--variant", "all", "--quiet"]) == 0
    with open_run(tmp_path / "r-agc.lr0.01.h5") as run:
        assert run.config["model"]["norm"] == "agc" and run.config["train"]["lr"] == 0.01
    with open_run(tmp_path / "r-bn.h5") as run:
        assert run.config["model"]["norm"] == "bn" and run.status == "complete"
    # existing outputs are refused before anything runs
    assert main(["run", str(p), "--variant", "bn", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
