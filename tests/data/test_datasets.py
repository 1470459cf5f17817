from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradlab.config import DataConfig
from gradlab.data.datasets import BatchLoader, load_split, num_batches, random_crop_flip, synthetic_images
from gradlab.errors import DatasetError


def test_paper_batch_count():
    assert num_batches(50_000, 256) == 195


def test_synthetic_is_deterministic_and_prefix_stable():
    a, la = synthetic_images(1500, seed=3)
    b, lb = synthetic_images(700, seed=3)
    assert torch.equal(a[:700], b) and torch.equal(la[:700], lb)
    assert a.dtype == torch.uint8 and a.shape == (1500, 3, 32, 32)
    assert set(la.tolist()) == set(range(10))
    # intensity varies a lot, independent of the class: the metrics have something to sort
    s = a.float().sum((1, 2, 3))
    assert s.std() / s.mean() > 0.2


def test_cifar10_sample_from_foolbox():
    d = load_split(DataConfig(dataset="cifar10-sample"), train=True)
    assert d.images.shape == (20, 3, 32, 32) and d.images.dtype == torch.uint8
    assert d.labels.min() >= 0 and d.labels.max() <= 9 and d.classes[0] == "airplane"


def test_cifar10_missing_names_folder(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "cifar-10-batches-py")):
        load_split(DataConfig(dataset="cifar10", root=str(tmp_path), download=False), train=True)


def test_random_crop_flip_matches_per_image_reference():
    x = torch.rand(6, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, gen, pad=2)
    gen = torch.Generator().manual_seed(0)
    oy = torch.randint(0, 5, (6,), generator=gen)
    ox = torch.randint(0, 5, (6,), generator=gen)
    flip = torch.rand(6, generator=gen) < 0.5
    for i in range(6):
        ref = F.pad(x[i], (2, 2, 2, 2))[:, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]  # crop, then flip
        torch.testing.assert_close(out[i], ref.flip(-1) if flip[i] else ref)


def test_loader_drops_last_and_normalises():
    x, y = synthetic_images(100, seed=0)
    from gradlab.data.datasets import ImageSet

    loader = BatchLoader(ImageSet("s", x, y, ()), torch.device("cpu"), 32)
    batches = list(loader.batches(torch.arange(100)))
    assert len(batches) == len(loader) == 3 and all(len(b[1]) == 32 for b in batches)
    assert torch.equal(batches[1][1], y[32:64])
    assert abs(float(batches[0][0].mean())) < 1.5


def test_cifar10_without_download_does_not_talk_of_downloading(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_split(DataConfig(dataset="cifar10", root=str(tmp_path), download=False), True)
    msg = str(e.value)
    assert "data.download = false" in msg and "could not be downloaded" not in msg and "download=True" not in msg
    (tmp_path / "cifar-10-batches-py").mkdir()  # present but empty: damaged, not "download it"
    with pytest.raises(DatasetError) as e:
        load_split(DataConfig(dataset="cifar10", root=str(tmp_path), download=True), True)
    assert "incomplete or damaged" in str(e.value) and "download=True" not in str(e.value)
