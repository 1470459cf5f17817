"""Your own model and data from a study file: import paths and ImageFolder, with their errors."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from PIL import Image

from gradlab.config import DataConfig, ModelConfig
from gradlab.data.datasets import load_split
from gradlab.errors import ConfigError, DatasetError
from gradlab.models import build_model
from gradlab.train.runner import Runner

USER_MODULE = """
import torch
from torch import nn

def make_net(cfg):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, cfg.num_classes))

def not_a_module(cfg):
    return 42

def broken(cfg):
    raise ValueError("width must be even")

def load(cfg):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = torch.arange(40) % 2
    ds = torch.utils.data.TensorDataset(x, y)
    return ds, torch.utils.data.Subset(ds, range(8))

def load_float_hwc(cfg):
    x = torch.rand(10, 12, 12, 3)
    return [(x[i], i % 2) for i in range(10)], [(x[i], i % 2) for i in range(4)]
"""


@pytest.fixture
def usermod(tmp_path, monkeypatch):
    (tmp_path / "mylab.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mylab", None)
    return "mylab"


def _write_folder(root, sizes=None):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                size = (sizes or {}).get((split, c, i), (16, 16))
                a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(a if c == "cat" else a[..., 0]).save(d / f"{i}.png")  # dogs are grayscale


def test_import_path_model(usermod):
    m = build_model(ModelConfig(name="mylab:make_net", num_classes=5))
    assert m[-1].out_features == 5


@pytest.mark.parametrize("spec, match", [
    ("nosuchmod:make_net", "cannot import module 'nosuchmod'"),
    ("mylab:nothere", "has no attribute 'nothere'"),
    ("mylab:not_a_module", "returned a int, not a torch.nn.Module"),
    ("mylab:broken", "raised ValueError: width must be even"),
])
def test_import_path_model_errors(usermod, spec, match):
    with pytest.raises(ConfigError, match=match):
        build_model(ModelConfig(name=spec))


def test_import_path_dataset(usermod):
    cfg = DataConfig(dataset="mylab:load")
    train, test = load_split(cfg, True), load_split(cfg, False)
    assert train.images.shape == (40, 3, 16, 16) and len(test) == 8 and train.classes == ("0", "1")
    f = load_split(DataConfig(dataset="mylab:load_float_hwc"), True)
    assert f.images.shape == (10, 3, 12, 12) and f.images.dtype.is_floating_point is False


def test_imagefolder_study_runs(tiny, tmp_path):
    root = tmp_path / "folder"
    _write_folder(root)
    data = load_split(DataConfig(dataset="imagefolder", root=str(root)), True)
    assert data.images.shape == (24, 3, 16, 16) and data.classes == ("cat", "dog")
    assert (data.images[12:, 0] == data.images[12:, 1]).all()  # grayscale repeated to RGB
    cfg = tiny(data={"dataset": "imagefolder", "root": str(root), "subset": 0, "test_subset": 0, "augment": False},
               model={"num_classes": 2}, train={"epochs": 1, "batch_size": 8, "milestones": []})
    out = Runner(cfg, progress=False, log=lambda s: None).run()
    with h5py.File(out) as f:
        assert f.attrs["epochs_done"] == 1 and f["probes/random/distance_l2"].shape == (1, 3)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetError, match="train is missing"):
        load_split(DataConfig(dataset="imagefolder", root=str(tmp_path / "none")), True)
    root = tmp_path / "mixed"
    _write_folder(root, sizes={("train", "cat", 3): (20, 16)})
    with pytest.raises(DatasetError, match=r"one size .* 16x16 but .*3\.png is 16x20"):
        load_split(DataConfig(dataset="imagefolder", root=str(root)), True)


def test_cli_one_line_for_a_bad_import_path(tmp_path, tiny):
    study = tmp_path / "s.toml"
    study.write_text('[model]\nname = "nosuchpkg.models:make_net"\n[train]\nepochs = 1\ndevice = "cpu"\n'
                     f'[data]\nsubset = 64\ntest_subset = 32\n[output]\npath = "{tmp_path / "x.h5"}"\n')
    res = subprocess.run([sys.executable, "-m", "gradlab", "run", str(study), "--quiet", "--no-score-cache"],
                         capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "cannot import module 'nosuchpkg.models'" in res.stderr
