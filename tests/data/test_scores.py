"""Score cache: hits without recompute, invalidation by content, CLI."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from gradlab.cli import main
from gradlab.config import DataConfig
from gradlab.data.datasets import ImageSet, load_split
from gradlab.metrics.hsv import HSV
from gradlab.metrics.intensity import Intensity
from gradlab.data.scores import ScoreCache, cached_scores, fingerprint


@pytest.fixture
def data() -> ImageSet:
    return load_split(DataConfig(dataset="synthetic", subset=200), train=True)


def _forbid(monkeypatch, cls):
    def boom(self, images, progress=None):
        raise AssertionError(f"{cls.name} recomputed despite the cache")

    monkeypatch.setattr(cls, "compute", boom)


def test_second_call_hits_cache(tmp_path, data, monkeypatch):
    path = tmp_path / "scores.h5"
    first = ScoreCache(path)
    a = first("intensity", data)
    h = first("hsv", data)
    assert first.misses == 2 and first.hits == 0
    _forbid(monkeypatch, Intensity)
    _forbid(monkeypatch, HSV)
    again = cached_scores(path)
    np.testing.assert_array_equal(again("intensity", data), a)
    np.testing.assert_array_equal(again("hsv", data), h)
    assert again.hits == 2 and again.misses == 0
    with h5py.File(path) as f:
        key = f"synthetic/{fingerprint(data.images)}/hsv/v1"
        assert f[key].shape == (200, 3) and f[key].attrs["n"] == 200


def test_changed_dataset_or_version_invalidates(tmp_path, data, monkeypatch):
    path = tmp_path / "scores.h5"
    cache = ScoreCache(path)
    a = cache("intensity", data)
    changed = data.images.clone()
    changed[5, 0, 0, 0] ^= 1  # one pixel value
    b = cache("intensity", ImageSet(data.name, changed, data.labels, data.classes))
    assert cache.misses == 2 and b[5] != a[5]
    cache("intensity", data.head(100))  # a subset is other content
    assert cache.misses == 3
    monkeypatch.setattr(Intensity, "version", 2)  # a changed computation
    cache("intensity", data)
    assert cache.misses == 4
    assert fingerprint(data.images) != fingerprint(data.images.reshape(200, 3, 16, 64))  # shape counts


def test_uncached_runs_and_cached_runs_agree(tmp_path, tiny):
    from gradlab.train.runner import build_study

    cfg = tiny(track={"probes": ["hsv", "edges", "random"]})
    plain = build_study(cfg)
    cached = build_study(cfg, scores=cached_scores(tmp_path / "s.h5"))
    for p, q in zip(plain.probes, cached.probes):
        assert p.name == q.name
        np.testing.assert_array_equal(p.index, q.index)
        np.testing.assert_array_equal(p.batch_score, q.batch_score)


def test_cli_scores_then_run_reuses_cache(tmp_path, capsys, monkeypatch):
    out = tmp_path / "scores.h5"
    args = ["scores", "--dataset", "synthetic", "--subset", "256", "--metrics", "intensity,hsv", "--out", str(out),
            "--quiet"]
    assert main(args) == 0
    assert "computed" in capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out.count("cached") == 2
    _forbid(monkeypatch, HSV)
    run = tmp_path / "r.h5"
    rc = main(["run", "studies/quickstart.toml", "--quiet", "--out", str(run), "--scores", str(out),
               "--set", "data.subset=256", "--set", "data.test_subset=64", "--set", "train.epochs=1",
               "--set", "train.batch_size=64", "--set", 'track.probes=["hsv"]', "--set", "output.heatmaps=false"])
    assert rc == 0
    assert main(["scores", "--metrics", "colour", "--out", str(out)]) == 2
    assert 'unknown metric "colour"' in capsys.readouterr().err


def test_unwritable_cache_still_scores(tmp_path, data):
    path = tmp_path / "scores.h5"
    path.mkdir()  # a folder where the file should be: cannot be opened
    with pytest.warns(UserWarning, match="score"):
        s = ScoreCache(path)("intensity", data)
    # the scores are still right: the intensity reference computed here by hand
    np.testing.assert_allclose(s, data.images.double().sum((1, 2, 3)).numpy())
