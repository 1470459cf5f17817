"""Your own images: ``data.dataset = "imagefolder"`` and ``data.dataset = "pkg.mod:load"``.

gradlab holds a dataset as uint8 ``[N, 3, H, W]`` in memory (``ImageSet``), so every image
must have the same size: ``imagefolder`` and ``to_imageset`` refuse mixed sizes with one line
naming two files (or indices) that differ, instead of resizing silently, because a resize
changes the pixel statistics the image metrics sort by. Grayscale images are repeated to 3
channels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gradlab.config import DataConfig
from gradlab.data.images import MEAN, STD, ImageSet
from gradlab.data.inputs import ItemInputs, channel_stats
from gradlab.errors import DatasetError
from gradlab.usercode import call_user, load_object


def _chw(a: np.ndarray, where: str) -> np.ndarray:
    """An image array as [C, H, W] with 1 or 3 channels (HWC is transposed), or one ``DatasetError``."""
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 3 and a.shape[0] not in (1, 3) and a.shape[-1] in (1, 3):
        a = a.transpose(2, 0, 1)  # HWC -> CHW
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise DatasetError(f"{where}: expected an image of shape [C, H, W] or [H, W, C] with 1 or 3 channels, "
                           f"got {tuple(a.shape)}")
    return a


def _float_pixels(t: torch.Tensor) -> np.ndarray | None:
    """The 8-bit pixels the metrics score of a float image in [0, 1] (``ToTensor()``'s range; exactly
    its uint8 source when the values are k / 255), else None: values outside [0, 1] (``Normalize()``)
    are not pixels, and clipping them would score an image the model never sees. The model's
    inputs stay the float tensors, as given."""
    if not t.numel() or float(t.min()) < 0 or float(t.max()) > 1:
        return None
    return torch.round(t.double() * 255).to(torch.uint8).numpy()


def _pixels(img: Any, where: str) -> tuple[np.ndarray | None, bool]:
    """``(uint8 [3, H, W] or None, is_float)`` of one image: PIL, uint8/integer or float tensor or
    array, CHW or HWC, 1 or 3 channels. Float items are the model's inputs as given; they have
    pixels for the metrics only when they are images with values in [0, 1] (``_float_pixels``)."""
    if hasattr(img, "convert"):  # PIL
        return np.asarray(img.convert("RGB")).transpose(2, 0, 1), False
    t = img if torch.is_tensor(img) else torch.from_numpy(np.ascontiguousarray(np.asarray(img)))
    t = t.detach().cpu()
    if t.is_floating_point():
        a = _float_pixels(t)
        try:
            a = _chw(a, where) if a is not None else None
        except DatasetError:  # a float tensor that is not an image (a feature vector): used as given
            a = None
        if a is None:
            return None, True  # not raw pixels (normalised, or not an image): only metric-free orders use it
    elif t.dtype == torch.bool or (t.numel() and (int(t.min()) < 0 or int(t.max()) > 255)):
        raise DatasetError(f"{where}: an integer image must hold pixel values 0..255, got {t.dtype} values "
                           f"{int(t.min())}..{int(t.max())}; pass uint8 pixels (or float tensors)")
    else:
        a = t.to(torch.uint8).numpy()
    a = _chw(a, where)
    return (np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a), t.is_floating_point()


def to_imageset(dataset: Any, name: str, where: list[str] | None = None,
                transform: Callable[[Any], Any] | None = None) -> ImageSet:
    """A torchvision-style dataset (``len``, items ``(image, label)``) as an ``ImageSet``.

    ``where[i]`` names item i in errors (file paths for folders). Class names come from
    ``dataset.classes`` when present, else ``"0"``..``"C-1"``. The model's inputs
    (``gradlab.data.inputs``): ``transform(image)`` when a transform is given; a dataset of float
    tensors as given (never clipped); raw images (PIL, uint8) normalised with their own
    per-channel mean/std, measured here. ``images`` keeps the raw pixels for the metrics
    (None when float items are not raw pixels).
    """
    if isinstance(dataset, ImageSet):
        return dataset
    if len(dataset) == 0:
        raise DatasetError(f"dataset {name!r} is empty")
    arrays: list[np.ndarray | None] = []
    labels, kinds, shapes = [], set(), []
    for i in range(len(dataset)):
        img, label = dataset[i]
        label_of = where[i] if where else f"{name}[{i}]"
        a, is_float = _pixels(img, label_of)
        shape = tuple(img.shape) if hasattr(img, "shape") else a.shape  # type: ignore[union-attr]
        if shapes and shape != shapes[0]:
            first = where[0] if where else f"{name}[0]"
            raise DatasetError(f"images of one size are needed: {first} is {_size(shapes[0])} but {label_of} is "
                               f"{_size(shape)}; resize them beforehand")
        kinds.add(is_float)
        if len(kinds) > 1:
            raise DatasetError(f"dataset {name!r} mixes float tensors and raw images ({label_of}); give one kind")
        shapes.append(shape)
        arrays.append(a)
        labels.append(int(label))
    classes = tuple(str(c) for c in getattr(dataset, "classes", None) or range(max(labels) + 1))
    images = None if any(a is None for a in arrays) else torch.from_numpy(np.stack(arrays))  # type: ignore[arg-type]
    inputs = ItemInputs(dataset, transform, name) if transform is not None or True in kinds else None
    mean, std = channel_stats(images) if images is not None else (MEAN, STD)
    return ImageSet(name, images, torch.tensor(labels, dtype=torch.int64), classes, mean, std, inputs)


def _size(shape: tuple[int, ...]) -> str:
    """W x H of a [C, H, W] shape (as the user sees an image); the shape itself otherwise."""
    return f"{shape[2]}x{shape[1]}" if len(shape) == 3 and shape[0] in (1, 3) else str(tuple(shape))


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
    return to_imageset(ds, "imagefolder", where=[p for p, _ in ds.samples], transform=user_transform(cfg))


def from_import_path(cfg: DataConfig, train: bool) -> ImageSet:
    """``data.dataset = "pkg.mod:load"``: ``load(cfg)`` returns ``(train, test)`` datasets."""
    pair = call_user(cfg.dataset, "data.dataset", cfg)
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise DatasetError(f"data.dataset = {cfg.dataset!r} must return (train, test), got a {type(pair).__name__}")
    return to_imageset(pair[0 if train else 1], cfg.dataset.rpartition(":")[2], transform=user_transform(cfg))


def user_transform(cfg: DataConfig) -> Callable[[Any], Any] | None:
    """``data.transform = "pkg.mod:attr"``: the user's preprocessing of one raw image (a torchvision
    transform or any callable), exactly as in their training loop; None when not set."""
    return load_object(cfg.transform, "data.transform") if cfg.transform else None
