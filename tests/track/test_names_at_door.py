"""Names checked at the door (gradlab.naming): every name a user gives is refused before any
work when HDF5 would not store it as one link, and every name the check lets through reads back."""
from __future__ import annotations

import string

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import gradlab
from gradlab import naming
from gradlab import quantities as Q
from gradlab.data.datasets import ImageSet
from gradlab.errors import ConfigError, RunFileError
from gradlab.train.variants import _variants_table

BAD = ["a/b", "", ".", "</script>", "x\x00y", "\ud800"]


def _batches(n_batches: int = 2, m: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(m, 3, generator=g), torch.randint(0, 2, (m,), generator=g)) for _ in range(n_batches)]


def _model():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "a name must be a non-empty string without '/'" in text or "reserved" in text
    return text


@pytest.mark.parametrize("bad", BAD)
def test_a_bad_probe_name_is_refused_before_any_work(tmp_path, bad):
    out = tmp_path / "r.h5"
    read = []

    class Spy(list):  # a re-iterable that records being read: the check comes first
        def __iter__(self):
            read.append(1)
            return super().__iter__()

    with pytest.raises(ConfigError) as exc:
        gradlab.Tracker(_model(), out, probes={"random": _batches(), bad: Spy(_batches())})
    _one_line(exc)
    assert not out.exists() and not read


def test_a_control_name_is_refused_for_user_batches_and_kept_for_the_control(tmp_path):
    with pytest.raises(ConfigError, match="reserved for the control") as exc:
        gradlab.Tracker(_model(), tmp_path / "a.h5", probes={"random": _batches(), "random@class": _batches()})
    _one_line(exc)
    assert not (tmp_path / "a.h5").exists()
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (16,), generator=g)
    data = ImageSet("t", (torch.rand(16, 3, 2, 2, generator=g) * 255).to(torch.uint8), labels, ("0", "1"))
    control = gradlab.orders.batches(data, "random", 4, batching="class")
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with gradlab.Tracker(model, tmp_path / "b.h5", probes={"random@class": control}) as t:
        t.epoch_start()
        t.epoch_end(lr=0.1)
    assert gradlab.open_run(tmp_path / "b.h5").probes == ["random@class"]


@pytest.mark.parametrize("bad", ["a/b", "", "."])
def test_a_bad_epoch_end_key_is_refused_before_the_probe_pass(tmp_path, bad):
    out = tmp_path / "r.h5"
    t = gradlab.Tracker(_model(), out, probes={"random": _batches()})
    t.epoch_start()
    with pytest.raises(ConfigError) as exc:
        t.epoch_end(**{bad: 1.0})
    _one_line(exc)
    t.epoch_end(lr=0.1)  # nothing was written: the same epoch commits as epoch 0
    t.close()
    with gradlab.open_run(out) as run:
        assert run.epochs_done == 1 and not run.has("user")


@pytest.mark.parametrize("bad", ["a/b", "."])
def test_a_bad_quantity_name_is_refused_before_any_work(bad, tmp_path):
    """Declaring a quantity registers nothing (gradlab.quantities); the tracker that is asked to
    store it refuses a bad name in one line, before the run file exists."""
    bad_q = type("Bad", (Q.Quantity,), {"name": bad, "compute": lambda self, r: 0})
    with pytest.raises(ConfigError) as exc:
        gradlab.Tracker(_model(), tmp_path / "r.h5", probes={"random": _batches()}, quantities=[bad_q])
    _one_line(exc)
    assert bad not in Q.QUANTITIES and not (tmp_path / "r.h5").exists()


def test_a_bad_metric_or_variant_name_is_refused():
    from gradlab.registry import entry

    with pytest.raises(ConfigError) as exc:
        entry("edge/ness", "x:y")
    _one_line(exc)
    for bad in (".", ".."):
        with pytest.raises(ConfigError, match="variant"):
            _variants_table({"variants": {bad: []}}, "study.toml")


def test_a_missing_dataset_is_named_missing_not_damaged(tmp_path):
    out = tmp_path / "r.h5"
    with gradlab.Tracker(_model(), out, probes={"random": _batches()}) as t:
        t.epoch_start()
        t.epoch_end(lr=0.1)
    with gradlab.open_run(out) as run:
        with pytest.raises(RunFileError, match="has no dataset /probes/random/nothing.*intact") as exc:
            run._read("probes/random/nothing")
        assert "damaged" not in str(exc.value)
        with pytest.raises(KeyError, match="'other' not in run"):
            run.distances("other")


# names the check lets through must read back as themselves; names it refuses must be refused
NAMES = st.one_of(st.text(min_size=0, max_size=12),
                  st.text(alphabet=string.punctuation + " .@<>/\x00é\u2028", max_size=6),
                  st.sampled_from(BAD + ["..", " ", "random", "random@class", "<img onerror=x>", "a@strat"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_every_name_the_check_passes_reads_back(tmp_path_factory, name):
    out = tmp_path_factory.mktemp("h") / "r.h5"
    try:
        naming.check_name("probe", name, ["random@strat", "random@class"])
    except ConfigError:
        with pytest.raises(ConfigError):
            gradlab.Tracker(_model(), out, probes={name: _batches()}, per_layer=False, param_stats="off")
        assert not out.exists()
        return
    probes = {name: _batches()} if name == "random" else {"random": _batches(seed=1), name: _batches()}
    with gradlab.Tracker(_model(), out, probes=probes, per_layer=False, param_stats="off") as t:
        t.epoch_start()
        t.epoch_end(lr=0.1, **{name: 2.5})
    with gradlab.open_run(out) as run:
        assert set(run.probes) == set(probes)
        assert run.distances(name).shape[0] == 2
        assert run.distance_matrix(name, "l2").shape == (1, 2)
        assert run._read(gradlab.runfile.names.scalar(name))[0] == 2.5 or name in ("lr", "phase")


def test_a_markup_name_passes_and_the_report_reads_it_intact(tmp_path, capsys):
    """A name HDF5 stores as one link is the user's to choose: the report shows it escaped and
    never calls the intact file damaged."""
    from gradlab.cli import main

    name = "<script>alert(1)<!--"
    out = tmp_path / "r.h5"
    with gradlab.Tracker(_model(), out, probes={"random": _batches(), name: _batches(seed=3)}) as t:
        for _ in range(2):
            t.epoch_start()
            t.epoch_end(lr=0.1)
    assert main(["report", str(out), "--out", str(tmp_path / "r.html"), "--perm", "20"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "<script>alert(1)" not in page and "<!--" not in page and "&lt;script&gt;alert(1)" in page
    assert "damaged" not in capsys.readouterr().err
