"""Probe inputs are the training inputs, bit for bit, on every input route: PIL + transform,
uint8 tensors, ImageFolder, a Lightning datamodule's dataset, a study file with an import-path
dataset. Already-normalised float datasets are used as given or refused in one line, never
clipped; raw images without a transform are normalised with their own measured mean/std."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

import gradlab
from gradlab.errors import GradlabError

T = pytest.importorskip("torchvision.transforms")
N, M, SIDE = 40, 8, 8  # images, batch size, image side
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _pixels(n=N, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (n, 3, SIDE, SIDE), generator=g, dtype=torch.uint8)
    return base


class PILSet(Dataset):
    """A torchvision-style dataset of PIL images, with an optional transform of its own."""

    def __init__(self, pixels, transform=None):
        self.pixels, self.transform = pixels, transform
        self.classes = ["a", "b"]

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        img = Image.fromarray(self.pixels[i].permute(1, 2, 0).numpy())
        return (self.transform(img) if self.transform else img), i % 2


class TensorSet(PILSet):
    """Items are uint8 CHW tensors."""

    def __getitem__(self, i):
        img = self.pixels[i]
        return (self.transform(img) if self.transform else img), i % 2


def _transform():
    return T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])


def _user_batches(train_set, pb):
    """What the user's own training loop feeds the model for the images of each probe batch."""
    for k in range(pb.num_batches):
        idx = [int(i) for i in pb.index[k * M:(k + 1) * M]]
        yield next(iter(DataLoader(Subset(train_set, idx), batch_size=M, shuffle=False)))


def _assert_same(pb, train_set):
    got = list(pb.batches())
    assert len(got) == pb.num_batches == N // M
    for (x, y), (ux, uy) in zip(got, _user_batches(train_set, pb)):
        assert x.dtype == ux.dtype and torch.equal(x, ux)  # bit for bit
        assert torch.equal(y, uy)


@pytest.mark.parametrize("order", ["intensity", "random"])
def test_pil_dataset_with_transform_is_probed_as_trained(order):
    px = _pixels()
    pb = gradlab.orders.batches(PILSet(px), order, M, transform=_transform())
    _assert_same(pb, PILSet(px, _transform()))
    t = _transform()
    for x, idx in zip(pb.batches(), pb.index.reshape(-1, M)):
        for row, i in zip(x[0], idx):  # every image of every batch is transform(image)
            assert torch.equal(row, t(PILSet(px)[int(i)][0]))
    if order == "intensity":  # ascending in raw pixel sums: the metric scores raw pixels
        sums = px.double().sum((1, 2, 3)).numpy()[pb.index]
        assert np.all(np.diff(sums) >= 0)
    assert pb.preprocessing.kind == "transform" and "Normalize" in pb.preprocessing.transform


def test_uint8_tensors_with_transform_and_without():
    px = _pixels(seed=1)
    own = T.Lambda(lambda x: (x.float() / 255 - 0.5) / 0.25)  # the loop: (0.5, 0.25)
    pb = gradlab.orders.batches(TensorSet(px), "intensity", M, transform=own)
    _assert_same(pb, TensorSet(px, own))
    # without a transform: normalised with the data's own measured per-channel mean/std, not CIFAR-10's
    pb = gradlab.orders.batches(TensorSet(px), "random", M)
    x01 = px.double() / 255
    mean, std = x01.mean((0, 2, 3)).numpy(), x01.std((0, 2, 3), unbiased=False).numpy()
    np.testing.assert_allclose(pb.preprocessing.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(pb.preprocessing.std, std, rtol=1e-12)
    x, _ = next(pb.batches())
    want = (px[pb.index[:M]].float() / 255 - torch.tensor(pb.preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1)
            ) / torch.tensor(pb.preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1)
    assert torch.equal(x, want)


def test_normalised_dataset_is_used_as_given_or_refused_in_one_line():
    px = _pixels(seed=2)
    normalised = PILSet(px, _transform())  # ToTensor() + Normalize(): values in [-2, 2]
    pb = gradlab.orders.batches(normalised, "random", M)  # no metric: the tensors exactly as given
    _assert_same(pb, normalised)
    assert pb.preprocessing.kind == "as given"
    with pytest.raises(GradlabError) as info:
        gradlab.orders.batches(normalised, "intensity", M)
    msg = str(info.value)
    assert "\n" not in msg and "transform=" in msg and "raw dataset" in msg
    # ToTensor() alone: values k/255 are raw pixels, so metric orders work and the tensors stay as given
    plain = PILSet(px, T.ToTensor())
    pb = gradlab.orders.batches(plain, "intensity", M)
    _assert_same(pb, plain)
    assert np.all(np.diff(px.double().sum((1, 2, 3)).numpy()[pb.index]) >= 0)


def test_random_transform_is_refused_at_construction():
    px = _pixels(seed=3)
    state = torch.get_rng_state()
    with pytest.raises(GradlabError, match="random transform"):
        gradlab.orders.batches(PILSet(px), "random", M, transform=T.Compose([T.RandomHorizontalFlip(0.5),
                                                                             T.RandomCrop(6), T.ToTensor()]))
    assert torch.equal(torch.get_rng_state(), state)  # checking it drew nothing from the training's RNG


def test_imagefolder_with_transform(tmp_path):
    from torchvision.datasets import ImageFolder

    px = _pixels(seed=4)
    for i in range(N):
        folder = tmp_path / "train" / "ab"[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(px[i].permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    pb = gradlab.orders.batches(ImageFolder(str(tmp_path / "train")), "intensity", M, transform=_transform())
    _assert_same(pb, ImageFolder(str(tmp_path / "train"), transform=_transform()))


def test_lightning_datamodule_dataset():
    pl = pytest.importorskip("pytorch_lightning")

    class DM(pl.LightningDataModule):
        def setup(self, stage=None):
            self.train_set = PILSet(_pixels(seed=5), _transform())

        def train_dataloader(self):
            return DataLoader(self.train_set, batch_size=M, shuffle=True)

    dm = DM()
    dm.setup("fit")
    ds = dm.train_dataloader().dataset
    pb = gradlab.orders.batches(ds, "random", M)  # its dataset as it is: the tensors the module trains on
    _assert_same(pb, ds)
    raw = PILSet(ds.pixels)  # or its raw images with its transform: metric orders too
    pb = gradlab.orders.batches(raw, "intensity", M, transform=ds.transform)
    _assert_same(pb, ds)


def test_gradient_order_scores_and_probes_the_transformed_inputs(tmp_path):
    px = _pixels(seed=6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 2))
    probes = {"random": gradlab.orders.batches(PILSet(px), "random", M, transform=_transform()),
              **gradlab.orders.gradient_batches(PILSet(px), ["loss"], M, transform=_transform())}
    with gradlab.Tracker(model, tmp_path / "g.h5", probes, param_stats="off") as tr:
        tr.epoch_start()
        tr.epoch_end(lr=0.1)
    _assert_same(probes["loss"], PILSet(px, _transform()))
    with gradlab.open_run(tmp_path / "g.h5") as run:
        for name in ("random", "loss"):
            a = run.f[f"probes/{name}"].attrs
            assert a["preprocessing"] == "transform" and "Normalize" in str(a["transform"])


def test_tracker_records_what_was_applied(tmp_path):
    px = _pixels(seed=7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 2))
    probes = {"random": gradlab.orders.batches(TensorSet(px), "random", M),
              "mine": [(torch.randn(M, 3, SIDE, SIDE), torch.zeros(M, dtype=torch.long))]}
    with gradlab.Tracker(model, tmp_path / "r.h5", probes, param_stats="off") as tr:
        tr.epoch_start()
        tr.epoch_end(lr=0.1)
    with gradlab.open_run(tmp_path / "r.h5") as run:
        a = run.f["probes/random"].attrs
        assert a["preprocessing"] == "normalise"
        np.testing.assert_allclose(a["input_mean"], probes["random"].preprocessing.mean)
        assert not np.allclose(a["input_mean"], (0.4914, 0.4822, 0.4465))  # not CIFAR-10's
        assert run.f["probes/mine"].attrs["preprocessing"] == "user batches"


USERMOD = """
import torch
from PIL import Image
from torchvision import transforms as T

TRANSFORM = T.Compose([T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])


class PILSet(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.px = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
        self.transform = None

    def __len__(self):
        return len(self.px)

    def __getitem__(self, i):
        img = Image.fromarray(self.px[i].permute(1, 2, 0).numpy())
        return (self.transform(img) if self.transform else img), i % 2


def load(cfg):
    return PILSet(40, 0), PILSet(16, 1)
"""


def test_study_file_import_path_with_transform(tmp_path, monkeypatch, tiny):
    from gradlab.data.orders import OrderBatches
    from gradlab.data.datasets import BatchLoader
    from gradlab.train.runner import build_study, data_attrs

    (tmp_path / "inmod21.py").write_text(textwrap.dedent(USERMOD))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("inmod21", None)
    cfg = tiny(data={"dataset": "inmod21:load", "transform": "inmod21:TRANSFORM", "subset": 0, "test_subset": 0,
                     "augment": False}, model={"num_classes": 2}, train={"batch_size": M})
    s = build_study(cfg)
    import inmod21

    user = inmod21.PILSet(40, 0)
    user.transform = inmod21.TRANSFORM
    loader = BatchLoader(s.train, s.device, M)
    for order in s.probes:  # intensity and random, as gradlab run probes them
        _assert_same(OrderBatches(order, loader), user)
    x, _ = next(BatchLoader(s.test, s.device, 16).all_batches())  # evaluation sees transform(image) too
    test = inmod21.PILSet(16, 1)
    test.transform = inmod21.TRANSFORM
    assert torch.equal(x, next(iter(DataLoader(test, batch_size=16)))[0])
    attrs = data_attrs(s.train)
    assert attrs["data_preprocessing"] == "transform" and "Normalize" in attrs["data_transform"]
    assert "data_mean" not in attrs


def test_study_file_transform_only_for_user_data(tiny):
    from gradlab.errors import ConfigError

    with pytest.raises(ConfigError, match="your own data"):
        tiny(data={"transform": "x.y:T"})
    with pytest.raises(ConfigError, match="import path"):
        tiny(data={"dataset": "imagefolder", "transform": "not a path"})


def test_study_file_imagefolder_with_transform(tmp_path, monkeypatch, tiny):
    from torchvision.datasets import ImageFolder

    from gradlab.data.datasets import BatchLoader
    from gradlab.data.orders import OrderBatches
    from gradlab.train.runner import build_study

    px = _pixels(seed=8)
    for split, rng in (("train", range(N)), ("test", range(8))):
        for i in rng:
            folder = tmp_path / "imgs" / split / "ab"[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(px[i].permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    (tmp_path / "tfmod21.py").write_text(
        "from torchvision import transforms as T\n"
        "TRANSFORM = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.25,) * 3)])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tfmod21", None)
    cfg = tiny(data={"dataset": "imagefolder", "root": str(tmp_path / "imgs"), "transform": "tfmod21:TRANSFORM",
                     "subset": 0, "test_subset": 0}, model={"num_classes": 2}, train={"batch_size": M})
    s = build_study(cfg)
    loader = BatchLoader(s.train, s.device, M)
    for order in s.probes:
        _assert_same(OrderBatches(order, loader), ImageFolder(str(tmp_path / "imgs" / "train"), transform=_transform()))
