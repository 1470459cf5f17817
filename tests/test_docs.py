"""The docs site: generated reference pages are complete and current, and the tutorials run as pasted.

- every key of every config dataclass (and every ``TrackOptions`` field) has a comment in the
  source, which ``docs/gen_reference.py`` turns into ``docs/reference/config.md``;
- the generated pages (config, CLI, run file) equal what the generator writes now;
- the Python blocks of each tutorial, concatenated in page order, run in a fresh folder.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def python_blocks(path: Path) -> list[str]:
    """The bodies of the ```python fenced blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.M | re.S)


def run_script(code: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``code`` as a file in ``cwd``, run by this interpreter with this checkout first on the path."""
    script = cwd / "snippet.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_every_config_key_is_documented():
    assert _generator().undocumented() == [], "add a comment to each key in gradlab/config.py (or options.py)"


def test_a_key_without_a_comment_is_reported(tmp_path):
    gen = _generator()
    src = tmp_path / "cfg.py"
    src.write_text(textwrap.dedent("""
        from dataclasses import dataclass, field

        @dataclass
        class Section:
            # the learning rate
            lr: float = 0.1
            epochs: int = 6
            milestones: list[int] = field(default_factory=lambda: [2, 4])  # LR steps
    """), encoding="utf-8")
    namespace: dict = {}
    exec(compile(src.read_text(), str(src), "exec"), namespace)
    namespace["Section"].__module__ = "builtins"  # get_type_hints resolves builtins only
    rows, missing = gen.config_rows(namespace["Section"], src, "train.", toml=True)
    assert missing == ["train.epochs"]
    assert rows[0] == "| `train.lr` | float | `0.1` | the learning rate |"
    assert rows[2] == "| `train.milestones` | list of int | `[2, 4]` | LR steps |"


def test_config_reference_lists_every_key_with_its_default():
    import dataclasses

    from gradlab.config import StudyConfig

    text = (DOCS / "reference" / "config.md").read_text(encoding="utf-8")
    for section in dataclasses.fields(StudyConfig):
        for f in dataclasses.fields(section.type if isinstance(section.type, type) else section.default_factory):
            assert f"| `{section.name}.{f.name}` |" in text, f"{section.name}.{f.name} missing from config.md"


def test_generated_pages_are_up_to_date(capsys):
    assert _generator().main(["--check"]) == 0, capsys.readouterr().err + " (run: python docs/gen_reference.py)"


def test_site_pages_are_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages and all(f" {p}" in nav for p in pages), sorted(p for p in pages if f" {p}" not in nav)


def test_tracker_and_analysis_tutorials_run_as_pasted(tmp_path):
    tutorials = DOCS / "tutorials"
    code = "\n".join(python_blocks(tutorials / "tracker.md") + python_blocks(tutorials / "analysis.md"))
    res = run_script(code, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "runs" / "tutorial.h5").is_file() and (tmp_path / "heatmap.html").is_file()


def test_lightning_tutorial_runs_as_pasted(tmp_path):
    pytest.importorskip("pytorch_lightning")
    res = run_script("\n".join(python_blocks(DOCS / "tutorials" / "lightning.md")), tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "test_acc" in res.stdout


def test_orders_howto_runs_after_the_tracker_tutorial(tmp_path):
    blocks = python_blocks(DOCS / "tutorials" / "tracker.md") + python_blocks(DOCS / "howto" / "orders-and-cuts.md")
    res = run_script("\n".join(blocks), tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "'align@strat'" in res.stdout and "'match'" in res.stdout


QUICKSTART_PAGES = ("reference/api.md", "explanation/noise-scale.md")  # blocks that read runs/quickstart.h5


@pytest.mark.slow
def test_quickstart_blocks_run_after_the_quickstart(tmp_path):
    """The pages whose Python blocks read ``runs/quickstart.h5``: run the quickstart (2 of its
    6 epochs, to keep this short), then each page's blocks."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, "-m", "gradlab", "run", str(ROOT / "studies" / "quickstart.toml"), "--quiet",
                    "--set", "train.epochs=2", "--set", "output.heatmaps=false", "--no-score-cache"],
                   cwd=tmp_path, check=True, env=env, timeout=1200)
    for page in QUICKSTART_PAGES:
        res = run_script("\n".join(python_blocks(DOCS / page)), tmp_path)
        assert res.returncode == 0, f"{page}:\n{res.stderr[-3000:]}"


def test_agc_howto_runs_on_the_committed_results(tmp_path):
    """The AGC / weight-mechanism how-to reads the run files committed in results/, from the repository root."""
    res = run_script("\n".join(python_blocks(DOCS / "howto" / "agc-weight-segmentation.md")), ROOT)
    (ROOT / "snippet.py").unlink(missing_ok=True)
    assert res.returncode == 0, res.stderr[-3000:]


# Every docs page with a ```python block, and the test that runs it; a new page with code fails
# here until a test runs its blocks.
TESTED_PAGES = {"tutorials/tracker.md", "tutorials/analysis.md", "tutorials/lightning.md", "howto/orders-and-cuts.md",
                "howto/agc-weight-segmentation.md", "howto/plugins.md", *QUICKSTART_PAGES,
                "howto/loggers.md"}  # tests/loggers/test_loggers.py


# The design notes show signatures and extension sketches (a model, loader and batches assumed), not
# examples to paste: the one page whose blocks are not run. Its extension sketches are exercised by
# tests/track/test_quantity_extension.py and tests/test_architecture.py.
SKETCH_PAGES = {"design.md"}


def test_every_page_with_python_blocks_is_run_by_a_test():
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if python_blocks(p)}
    assert pages <= TESTED_PAGES | SKETCH_PAGES, sorted(pages - TESTED_PAGES - SKETCH_PAGES)


def test_plugins_page_lists_every_layer_type_of_the_fast_path():
    """The supported-layers table of docs/howto/plugins.md names every module type the fast
    per-sample path hooks (gradlab.track.ghost.KINDS), and no other."""
    import re

    from gradlab.track.ghost import KINDS

    text = (DOCS / "howto" / "plugins.md").read_text(encoding="utf-8")
    table = text[text.index("| module | fast path | condition |"):]
    table = table[: table.index("\n\n")]
    listed = set(re.findall(r"`(?:nn\.|gradlab\.models\.agc\.)(\w+)`", table))
    assert listed == {t.__name__ for t in KINDS}, listed


def test_study_files_page_lists_every_study():
    text = (DOCS / "howto" / "study-files.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted((ROOT / "studies").glob("*.toml")) if f"| `{p.name}` |" not in text]
    assert not missing, f"docs/howto/study-files.md does not list {missing}"


def test_plugins_page_examples_run_and_compute(tmp_path):
    """The metric, order, quantity, policy and entries of docs/howto/plugins.md, as pasted, then
    each used once on small inputs (scores, a key, a row, an epoch's order)."""
    code = "\n".join(python_blocks(DOCS / "howto" / "plugins.md")) + """
import numpy as np, torch
from gradlab.metrics import score_images
imgs = torch.zeros(2, 3, 4, 4, dtype=torch.uint8); imgs[1, :, ::2] = 255
assert np.allclose(score_images(Contrast(), imgs), [0.0, 127.5]), score_images(Contrast(), imgs)
class S: loss = np.array([0.5, 2.0])
assert LossDescending().key(S(), 0.0).tolist() == [-0.5, -2.0]
from gradlab.quantities import SQ_DIST, FULL_SQ_NORM
assert DistanceOverFull().compute({SQ_DIST: np.array([4.0]), FULL_SQ_NORM: 16.0}).tolist() == [0.5]
from gradlab.train.policy import PolicyInput
cut = PolicyInput(np.arange(8), 2, np.array([3.0, 1.0, 2.0, 0.0]), None, 0)  # batches [[0, 1], [2, 3], ...]
order = low_first(cut, 0, torch.Generator().manual_seed(0))
assert sorted(order.tolist()) == [2, 3, 6, 7] and low_first(cut, 1, None) is None
assert set(entries()) == {"metric", "gradient order", "quantity", "training policy"}
print("ok")
"""
    res = run_script(code, tmp_path)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
