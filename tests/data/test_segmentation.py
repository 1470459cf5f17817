from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gradlab.config import DataConfig
from gradlab.data.datasets import BatchLoader, load_split
from gradlab.errors import ConfigError, DatasetError
from gradlab.train.runner import Runner
from gradlab.data.segmentation import (confusion, joint_flip, load_folder, scores_from_confusion,
                                  synthetic_buildings)


def test_synthetic_buildings_deterministic_and_prefix_stable():
    x1, m1 = synthetic_buildings(120, 7, size=32, chunk=50)
    x2, m2 = synthetic_buildings(20, 7, size=32, chunk=50)
    assert torch.equal(x1[:20], x2) and torch.equal(m1[:20], m2)
    assert x1.dtype == torch.uint8 and x1.shape == (120, 3, 32, 32) and m1.shape == (120, 32, 32)
    assert set(m1.unique().tolist()) == {0, 1}
    frac = m1.float().mean().item()
    assert 0.05 < frac < 0.4  # buildings are a minority class, as in aerial imagery
    # roofs are not just "the bright pixels": intensity alone does not separate the classes
    lum = x1.float().mean(1)
    assert lum[m1 == 1].mean() - lum[m1 == 0].mean() < 60


def test_tile_must_be_multiple_of_16():
    with pytest.raises(DatasetError, match="multiple of 16"):
        synthetic_buildings(4, 0, size=40)


def test_joint_flip_keeps_image_and_mask_aligned():
    x = torch.rand(64, 3, 16, 16)
    y = (x[:, 0] > 0.5).long()
    gen = torch.Generator().manual_seed(0)
    xa, ya = joint_flip(x, y, gen)
    assert torch.equal(ya, (xa[:, 0] > 0.5).long())
    assert not torch.equal(xa, x)  # something was flipped


def test_loader_returns_long_masks_and_augments_jointly():
    cfg = DataConfig(dataset="buildings", subset=32, test_subset=8, tile=32)
    data = load_split(cfg, train=True)
    loader = BatchLoader(data, torch.device("cpu"), 8)
    x, y = loader.get(torch.arange(8), torch.Generator().manual_seed(1))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8, 32, 32) and y.dtype == torch.int64


def test_confusion_and_miou_against_numpy():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(3, 3, 5, 5)))
    target = torch.from_numpy(rng.integers(0, 3, size=(3, 5, 5)))
    cm = confusion(logits, target, 3).numpy()
    pred = logits.argmax(1).numpy().ravel()
    t = target.numpy().ravel()
    ref = np.zeros((3, 3), int)
    for a, b in zip(t, pred):
        ref[a, b] += 1
    np.testing.assert_array_equal(cm, ref)
    s = scores_from_confusion(cm)
    ious = [((pred == c) & (t == c)).sum() / ((pred == c) | (t == c)).sum() for c in range(3)]
    assert s.miou == pytest.approx(np.mean(ious))
    assert s.pixel_acc == pytest.approx((pred == t).mean())
    assert s.mean_acc == pytest.approx(np.mean([(pred[t == c] == c).mean() for c in range(3)]))


def test_miou_ignores_absent_classes():
    s = scores_from_confusion(np.array([[10, 0], [0, 0]]))
    assert s.miou == 1.0 and np.isnan(s.iou[1])


def _write_pair(folder, split, name, img, mask, layout="images"):
    if layout == "images":
        (folder / split / "images").mkdir(parents=True, exist_ok=True)
        (folder / split / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / split / "images" / f"{name}.png")
        Image.fromarray(mask).save(folder / split / "masks" / f"{name}.png")
    else:  # Massachusetts: train/ + train_labels/, .tiff images and .tif masks
        (folder / split).mkdir(parents=True, exist_ok=True)
        (folder / f"{split}_labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / split / f"{name}.tiff")
        Image.fromarray(mask).save(folder / f"{split}_labels" / f"{name}.tif")


def test_segfolder_tiles_and_mask_encoding(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 200, size=(40, 70, 3), dtype=np.uint8)
    mask = np.zeros((40, 70), np.uint8)
    mask[5:20, 10:30] = 255
    _write_pair(tmp_path, "train", "a", img, mask)
    rgb_mask = np.repeat((mask // 255)[..., None], 3, 2)  # 0/1-valued RGB mask
    _write_pair(tmp_path, "train", "b", img, rgb_mask)
    data = load_folder(tmp_path, train=True, tile=16)
    assert len(data) == 2 * 2 * 4  # (40 // 16) x (70 // 16) tiles per image
    np.testing.assert_array_equal(data.images[0].permute(1, 2, 0).numpy(), img[:16, :16])
    np.testing.assert_array_equal(data.labels[1].numpy(), (mask[:16, 16:32] > 0).astype(np.uint8))
    assert torch.equal(data.labels[:8], data.labels[8:])
    assert len(load_folder(tmp_path, train=True, tile=16, limit=3)) == 3


def test_segfolder_massachusetts_layout_and_blank_tiles(tmp_path):
    img = np.full((32, 32, 3), 255, np.uint8)
    img[:16, :16] = 90  # one real tile, three no-data (white) tiles
    mask = np.zeros((32, 32), np.uint8)
    _write_pair(tmp_path, "test", "22678915_15", img, mask, layout="mass")
    data = load_folder(tmp_path, train=False, tile=16)
    assert len(data) == 1


def test_segfolder_errors(tmp_path):
    with pytest.raises(DatasetError, match="train/images"):
        load_folder(tmp_path, train=True, tile=16)
    img = np.zeros((32, 32, 3), np.uint8)
    _write_pair(tmp_path, "train", "a", img, np.zeros((32, 32), np.uint8))
    (tmp_path / "train" / "images" / "b.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="has no mask"):
        load_folder(tmp_path, train=True, tile=16)
    (tmp_path / "train" / "images" / "b.png").unlink()
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(tmp_path / "train" / "masks" / "a.png")
    with pytest.raises(DatasetError, match="same size"):
        load_folder(tmp_path, train=True, tile=16)


def test_segmentation_run_records_miou_and_params(tiny):
    cfg = tiny(data={"dataset": "buildings", "subset": 32, "test_subset": 16, "tile": 32},
               model={"name": "resunet", "num_classes": 2, "width": 4, "norm": "agc"},
               train={"epochs": 1, "batch_size": 16, "milestones": []},
               track={"probes": ["random"], "measures": ["l2"]})
    out = Runner(cfg, progress=False, log=lambda s: None).run()
    from gradlab import open_run

    with open_run(out) as run:
        c = run.train_curves()
        assert {"test_miou", "test_mean_acc"} <= set(c.columns)
        assert 0 <= c.test_miou[0] <= 1 and 0 <= c.train_acc[0] <= 1 and 0 <= c.test_acc[0] <= 1
        assert run.distances("random").shape[0] == 2  # probes work on masks too
        assert (run.param_stats().kind == "agc.lambda").any()


def test_task_mismatch_is_a_config_error(tiny):
    with pytest.raises(ConfigError, match="segmentation"):
        Runner(tiny(data={"dataset": "buildings", "subset": 32, "tile": 32}), progress=False)
    with pytest.raises(ConfigError, match="num_classes = 2"):
        Runner(tiny(data={"dataset": "buildings", "subset": 32, "test_subset": 8, "tile": 32},
                    model={"name": "resunet", "width": 4}), progress=False)
