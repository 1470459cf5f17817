"""Fashion-MNIST from the Debian package dataset-fashion-mnist: the IDX files read right (against a
naive full decompression), padded like mnist, its own normalisation, and one line naming the
package where it is missing. Without the package these tests skip, unless CI asked for it
(GRADLAB_REQUIRE_FASHION_MNIST=1, set by .ci/run after installing it)."""
from __future__ import annotations

import gzip
import os

import h5py
import numpy as np
import pytest
import torch

from gradlab.config import DataConfig
from gradlab.data import real
from gradlab.data.datasets import load_split
from gradlab.errors import DatasetError

INSTALLED = (real.FASHION_DIR / "train-images-idx3-ubyte.gz").is_file()
needs_package = pytest.mark.skipif(not INSTALLED and os.environ.get("GRADLAB_REQUIRE_FASHION_MNIST") != "1",
                                   reason=f"the Debian package {real.FASHION_PACKAGE} is not installed")


def _naive(name: str, offset: int) -> np.ndarray:
    """The whole file decompressed, header skipped by hand: the reference for read_idx."""
    return np.frombuffer(gzip.open(real.FASHION_DIR / name).read(), dtype=np.uint8, offset=offset)


@needs_package
def test_idx_files_read_as_the_raw_bytes():
    images = real.read_idx(real.FASHION_DIR / "train-images-idx3-ubyte.gz", 300)
    labels = real.read_idx(real.FASHION_DIR / "train-labels-idx1-ubyte.gz", 300)
    assert images.shape == (300, 28, 28) and images.dtype == np.uint8 and labels.shape == (300,)
    np.testing.assert_array_equal(images.reshape(-1), _naive("train-images-idx3-ubyte.gz", 16)[: 300 * 784])
    np.testing.assert_array_equal(labels, _naive("train-labels-idx1-ubyte.gz", 8)[:300])
    test_labels = real.read_idx(real.FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    assert len(test_labels) == 10_000 and np.bincount(test_labels).tolist() == [1000] * 10


@needs_package
def test_loader_pads_to_rgb32_with_labels_and_class_names():
    data = load_split(DataConfig(dataset="fashion-mnist", subset=300), True)
    assert data.name == "fashion-mnist" and len(data) == 300
    assert data.images.shape == (300, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64 and set(data.labels.tolist()) <= set(range(10))
    assert len(set(data.labels.tolist())) == 10  # 300 images hold every class
    assert data.classes == real.FASHION_CLASSES and len(data.classes) == 10
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    raw = _naive("train-images-idx3-ubyte.gz", 16)[: 300 * 784].reshape(300, 28, 28)
    np.testing.assert_array_equal(data.images[:, 1, 2:30, 2:30].numpy(), raw)
    assert (data.images[:, :, :2] == 0).all() and (data.images[:, :, :, 30:] == 0).all()  # padding
    assert torch.equal(data.images[:, 0], data.images[:, 2])  # grey repeated to 3 channels
    np.testing.assert_array_equal(data.labels.numpy(), _naive("train-labels-idx1-ubyte.gz", 8)[:300])
    again = load_split(DataConfig(dataset="fashion-mnist", subset=300), True)
    assert torch.equal(data.images, again.images) and torch.equal(data.labels, again.labels)
    test = load_split(DataConfig(dataset="fashion-mnist", test_subset=200), False)
    assert len(test) == 200 and not torch.equal(test.images, data.images[:200])  # the t10k files


@needs_package
def test_normalisation_constants_are_the_training_sets():
    x = real.read_idx(real.FASHION_DIR / "train-images-idx3-ubyte.gz")
    total, squares = int(x.sum(dtype=np.int64)), int((x.astype(np.int64) ** 2).sum())  # exact integer sums
    for n, (want_mean, want_std), atol in ((len(x) * 32 * 32, (real.FASHION_MEAN[0], real.FASHION_STD[0]), 5e-5),
                                           (x.size, (0.2860, 0.3530), 5e-4)):  # padded; the well-known 28x28
        mean = total / n / 255
        std = np.sqrt(squares / n / 255 ** 2 - mean ** 2)
        np.testing.assert_allclose((mean, std), (want_mean, want_std), atol=atol)


def test_missing_package_is_one_line_naming_it(monkeypatch, tmp_path):
    monkeypatch.setattr(real, "FASHION_DIR", tmp_path / "absent")
    with pytest.raises(DatasetError) as err:
        load_split(DataConfig(dataset="fashion-mnist"), True)
    msg = str(err.value)
    assert "\n" not in msg and "dataset-fashion-mnist" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_a_file_that_is_not_idx_is_refused(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8))
    with pytest.raises(DatasetError, match="not an IDX file"):
        real.read_idx(bad)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x0a" + b"\x01" * 4))
    with pytest.raises(DatasetError, match="truncated"):
        real.read_idx(short)


@needs_package
def test_run_file_records_the_normalisation(tiny):
    from gradlab.train.runner import Runner

    cfg = tiny(data={"dataset": "fashion-mnist", "subset": 64, "test_subset": 32, "augment": False},
               train={"epochs": 1, "milestones": []}, track={"probes": ["random"]})
    out = Runner(cfg, progress=False, log=lambda s: None).run()
    with h5py.File(out) as f:
        np.testing.assert_allclose(f.attrs["data_mean"], real.FASHION_MEAN)
        np.testing.assert_allclose(f.attrs["data_std"], real.FASHION_STD)
