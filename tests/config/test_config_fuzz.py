"""Hypothesis fuzzing of the config loader: random and malformed study files, dicts and
``--set`` overrides only ever give a clean ``StudyConfig`` or a clean ``ConfigError``."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradlab.config import StudyConfig, config_from_dict, load_config
from gradlab.errors import ConfigError

FUZZ = settings(max_examples=int(os.environ.get("GRADLAB_FUZZ_EXAMPLES", 150)), deadline=None, suppress_health_check=list(HealthCheck), database=None)
QUICKSTART = Path("studies/quickstart.toml").read_text()
KEYS = ["data", "model", "train", "track", "output", "data.dataset", "data.subset", "data.augment", "model.name",
        "train.epochs", "train.lr", "train.milestones", "train.batch_size", "train.on_nonfinite", "train.seed",
        "track.probes", "track.measures", "track.keep_grads", "track.grad_dtype", "output.path", "output.checkpoint",
        "train.epochs.x", "trian.epochs", "", "a..b"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 300), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["synthetic", "cifar10", "stop", "l2", "bn", "float16"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
keys = st.one_of(st.sampled_from([k.rsplit(".", 1)[-1] for k in KEYS]), st.text(max_size=10))
study_dicts = st.dictionaries(st.one_of(st.sampled_from(["data", "model", "train", "track", "output"]), keys),
                              st.one_of(st.dictionaries(keys, values, max_size=6), values), max_size=6)
override_values = st.one_of(st.text(max_size=20), st.sampled_from(["3", "0.1", "true", "[1, 2]", '["random"]',
                                                                   '"x"', "{a=1}", "nan", "inf", "[", "1979-05-27",
                                                                   "-1", "1e400", '"stop"', "[[[[1]]]]"]))
overrides = st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), override_values),
                               st.text(max_size=20)), max_size=4)


def _clean(fn) -> None:
    try:
        cfg = fn()
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg
        return
    assert isinstance(cfg, StudyConfig)
    t = cfg.train
    assert t.epochs >= 1 and t.batch_size >= 1 and math.isfinite(t.lr) and t.lr > 0


def _mutate(text: str, edits: list[tuple[int, str]]) -> str:
    for pos, chunk in edits:
        pos %= max(len(text), 1)
        text = text[:pos] + chunk + text[pos + len(chunk) // 2:]
    return text


@FUZZ
@given(st.one_of(st.text(max_size=200),
                 st.lists(st.tuples(st.integers(0, 10_000), st.text(max_size=8)), max_size=6)
                 .map(lambda e: _mutate(QUICKSTART, e)),
                 st.binary(max_size=100).map(lambda b: b.decode("latin-1"))),
       overrides)
def test_random_study_text(text, sets):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        _clean(lambda: load_config(path, sets))


@FUZZ
@given(st.binary(max_size=200))
def test_random_study_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.toml"
        path.write_bytes(data)
        _clean(lambda: load_config(path))


@FUZZ
@given(st.one_of(study_dicts, values), overrides)
def test_random_dicts_and_overrides(raw, sets):
    _clean(lambda: config_from_dict(raw, sets))
