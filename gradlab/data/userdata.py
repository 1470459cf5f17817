"""Your own images: ``data.dataset = "imagefolder"`` and ``data.dataset = "pkg.mod:load"``.

gradlab holds a dataset as uint8 ``[N, 3, H, W]`` in memory (``ImageSet``), so every image
must have the same size: ``imagefolder`` and ``to_imageset`` refuse mixed sizes with one line
naming two files (or indices) that differ, instead of resizing silently, because a resize
changes the pixel statistics the image metrics sort by. Grayscale images are repeated to 3
channels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradlab.config import DataConfig
from gradlab.data.datasets import ImageSet
from gradlab.errors import DatasetError
from gradlab.usercode import call_user


def _as_chw_uint8(img: Any, where: str) -> np.ndarray:
    """One image (PIL, uint8/float tensor or array, CHW or HWC, 1 or 3 channels) as uint8 [3, H, W]."""
    if hasattr(img, "convert"):  # PIL
        a = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    else:
        a = img.numpy() if torch.is_tensor(img) else np.asarray(img)
        if a.dtype != np.uint8:  # float images in [0, 1] (torchvision ToTensor)
            a = np.clip(np.rint(a.astype(np.float64) * 255), 0, 255).astype(np.uint8)
        if a.ndim == 2:
            a = a[None]
        if a.ndim == 3 and a.shape[0] not in (1, 3) and a.shape[-1] in (1, 3):
            a = a.transpose(2, 0, 1)  # HWC -> CHW
        if a.ndim != 3 or a.shape[0] not in (1, 3):
            raise DatasetError(f"{where}: expected an image of shape [C, H, W] or [H, W, C] with 1 or 3 channels, "
                               f"got {tuple(a.shape)}")
    return np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a


def to_imageset(dataset: Any, name: str, where: list[str] | None = None) -> ImageSet:
    """A torchvision-style dataset (``len``, items ``(image, label)``) as an ``ImageSet``.

    ``where[i]`` names item i in errors (file paths for folders). Class names come from
    ``dataset.classes`` when present, else ``"0"``..``"C-1"``.
    """
    if isinstance(dataset, ImageSet):
        return dataset
    if len(dataset) == 0:
        raise DatasetError(f"dataset {name!r} is empty")
    arrays, labels = [], []
    for i in range(len(dataset)):
        img, label = dataset[i]
        label_of = where[i] if where else f"{name}[{i}]"
        a = _as_chw_uint8(img, label_of)
        if arrays and a.shape != arrays[0].shape:
            first = where[0] if where else f"{name}[0]"
            raise DatasetError(f"images of one size are needed: {first} is {arrays[0].shape[2]}x{arrays[0].shape[1]} "
                               f"but {label_of} is {a.shape[2]}x{a.shape[1]}; resize them beforehand")
        arrays.append(a)
        labels.append(int(label))
    classes = tuple(str(c) for c in getattr(dataset, "classes", None) or range(max(labels) + 1))
    return ImageSet(name, torch.from_numpy(np.stack(arrays)), torch.tensor(labels, dtype=torch.int64), classes)


def imagefolder(cfg: DataConfig, train: bool) -> ImageSet:
    """torchvision ``ImageFolder`` under ``<root>/train`` and ``<root>/test`` (class = subfolder)."""
    from torchvision.datasets import ImageFolder

    root = Path(cfg.root)
    split = root / ("train" if train else "test")
    other = root / ("test" if train else "train")
    for folder in (split, other):
        if not folder.is_dir():
            raise DatasetError(f"data.dataset = \"imagefolder\" needs {folder}/<class>/<image>.png (and "
                               f"{root}/train, {root}/test with the same class folders); {folder} is missing")
    try:
        ds = ImageFolder(str(split))
    except (FileNotFoundError, OSError) as exc:
        raise DatasetError(f"{split}: {exc}") from None
    other_classes = sorted(p.name for p in other.iterdir() if p.is_dir())
    if other_classes != ds.classes:
        raise DatasetError(f"{root}/train and {root}/test have different class folders "
                           f"({ds.classes} vs {other_classes}); use the same classes in both")
    return to_imageset(ds, "imagefolder", where=[p for p, _ in ds.samples])


def from_import_path(cfg: DataConfig, train: bool) -> ImageSet:
    """``data.dataset = "pkg.mod:load"``: ``load(cfg)`` returns ``(train, test)`` datasets."""
    pair = call_user(cfg.dataset, "data.dataset", cfg)
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise DatasetError(f"data.dataset = {cfg.dataset!r} must return (train, test), got a {type(pair).__name__}")
    return to_imageset(pair[0 if train else 1], cfg.dataset.rpartition(":")[2])
