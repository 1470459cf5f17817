from __future__ import annotations

import pytest

from gradlab.config import StudyConfig, config_from_dict, load_config, lr_at, phase_of, parse_override
from gradlab.errors import ConfigError


def test_defaults_and_overrides():
    cfg = config_from_dict({}, ["train.milestones=[50, 100]", "track.probes=[\"random\"]", "model.name=dpn92",
                                "train.lr=1"])
    assert cfg.train.milestones == [50, 100] and cfg.track.probes == ["random"]
    assert cfg.model.name == "dpn92" and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match='unknown config key "train.bach_size".*"train.batch_size"'):
        config_from_dict({"train": {"bach_size": 3}})
    with pytest.raises(ConfigError, match='"trian".*"train"'):
        config_from_dict({"trian": {}})


@pytest.mark.parametrize("raw, msg", [
    ({"train": {"epochs": "3"}}, "train.epochs must be an integer"),
    ({"train": {"lr": True}}, "train.lr must be a number"),
    ({"track": {"probes": "random"}}, "track.probes must be a list"),
    ({"data": {"dataset": "cifar100"}}, r"unknown data.dataset .cifar100. \(did you mean \"cifar10\"\?\); choose one of"),
    ({"train": {"milestones": [4, 2]}}, "milestones must be increasing"),
    ({"train": 3}, r"\[train\] must be a table"),
])
def test_type_errors_are_clear(raw, msg):
    with pytest.raises(ConfigError, match=msg):
        config_from_dict(raw)


def test_override_parsing():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=hello") == (["a"], "hello")  # bare word -> string
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_paper_schedule_phases():
    cfg = config_from_dict({"train": {"epochs": 150, "lr": 0.1, "milestones": [50, 100], "gamma": 0.1}})
    phases = [phase_of(e, cfg.train.milestones) for e in range(150)]
    assert phases.count(0) == phases.count(1) == phases.count(2) == 50
    assert lr_at(0, cfg.train) == 0.1 and abs(lr_at(50, cfg.train) - 0.01) < 1e-12 and abs(lr_at(149, cfg.train) - 0.001) < 1e-12


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_studies_parse():
    from pathlib import Path

    for path in sorted(Path("studies").glob("*.toml")):
        assert isinstance(load_config(path), StudyConfig), path
