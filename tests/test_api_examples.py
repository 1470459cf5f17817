"""The API reference is one to work from: every public name of ``gradlab`` (``gradlab.__all__``)
has a docstring with an example, and the suite runs every example in those docstrings and in
their members' (doctest), so an example that no longer works fails here.

Examples that read a run use ``path``: a small run file of a linear model, made once here the
way the ``Tracker`` docstring's own example makes one."""
from __future__ import annotations

import doctest
import inspect

import pytest
import torch

import gradlab

PUBLIC = [n for n in gradlab.__all__ if n != "__version__"]


@pytest.fixture(scope="module")
def path(tmp_path_factory, sgd_epochs):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 4, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    sorted_ = sorted(batches, key=lambda b: float(b[0].sum()))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    out = tmp_path_factory.mktemp("api") / "run.h5"
    with gradlab.Tracker(model, out, probes={"random": batches, "sum": sorted_}, param_stats="epoch",
                         config={"train": {"milestones": [2]}}) as tracker:
        sgd_epochs(tracker, model, batches, 4, lr=lambda e: 0.1 if e < 2 else 0.01, phase=lambda e: int(e >= 2))
    return str(out)


def _examples(obj) -> list[doctest.DocTest]:
    """The doctests of ``obj``'s docstring and of its members defined in the same module."""
    module = inspect.getmodule(obj)
    tests = doctest.DocTestFinder(exclude_empty=True).find(obj, module=module)
    return [t for t in tests if t.examples]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_has_a_docstring_with_an_example(name):
    doc = inspect.getdoc(getattr(gradlab, name)) or ""
    assert doc.strip(), f"gradlab.{name} has no docstring"
    assert ">>>" in doc, f"gradlab.{name}'s docstring has no example (>>>)"


@pytest.mark.parametrize("name", PUBLIC)
def test_public_examples_run(name, path, tmp_path, monkeypatch):
    monkeypatch.chdir(_root())
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = _examples(getattr(gradlab, name))
    assert tests
    for t in tests:
        t.globs.update(path=path, tmp=str(tmp_path))
        runner.run(t, out=lambda s: pytest.fail(f"{t.name}:\n{s}"))
    assert runner.summarize(verbose=False).failed == 0


def _root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def _modules_with_examples() -> list[str]:
    root = _root() / "gradlab"
    return sorted("gradlab." + ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                  for p in root.rglob("*.py") if ">>>" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("module", _modules_with_examples())
def test_every_docstring_example_in_gradlab_runs(module, path, tmp_path, monkeypatch):
    """Examples outside gradlab.__all__ too (Metric, GradientOrder, ...): none may go stale."""
    import importlib

    monkeypatch.chdir(_root())
    mod = importlib.import_module(module)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in doctest.DocTestFinder(exclude_empty=True).find(mod):
        t.globs.update(path=path, tmp=str(tmp_path))
        runner.run(t, out=lambda s: pytest.fail(f"{t.name}:\n{s}"))
    assert runner.summarize(verbose=False).failed == 0
