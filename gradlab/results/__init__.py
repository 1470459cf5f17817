"""Findings as code: the results pages regenerated from the run files committed in ``results/``.

``generate(out)`` writes every page (markdown tables and PNG figures) from the run files;
``check(pages)`` regenerates them in memory and names the first page that differs from the
committed copy (``gradlab results --check``, run by CI), so a documented number cannot drift
from the runs that produced it. ``docs/results/`` is the committed copy.
"""
from __future__ import annotations

from pathlib import Path

from gradlab.errors import GradlabError

DOCS_DIR = "docs/results"


def repo_root() -> Path:
    """The repository the run files are committed in: the folder above the gradlab package."""
    return Path(__file__).resolve().parents[2]


def build(root: Path | None = None) -> dict[str, bytes]:
    """Every results page: {file name: content}."""
    from gradlab.results.pages import PAGES, index_page

    root = root or repo_root()
    files: dict[str, bytes] = {}
    for page in PAGES:
        files.update(page(root))
    files.update(index_page(root, list(files)))
    return files


def generate(out: Path, root: Path | None = None) -> list[Path]:
    """Write every page into ``out`` (created); returns the files written."""
    files = build(root)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files.items():
        (out / name).write_bytes(data)
        written.append(out / name)
    return written


def check(pages: Path, root: Path | None = None) -> list[str]:
    """Names of the pages in ``pages`` that differ from what the run files give, or are missing
    (an extra file there is also a difference); ``[]`` when all agree, byte for byte."""
    files = build(root)
    bad = [n for n, data in files.items() if not (pages / n).is_file() or (pages / n).read_bytes() != data]
    extra = sorted(p.name for p in pages.glob("*") if p.is_file() and p.name not in files) if pages.is_dir() else []
    return bad + extra


def first_difference(pages: Path, root: Path | None = None) -> None:
    """Raise one line naming the first differing page and the command that regenerates them."""
    bad = check(pages, root)
    if bad:
        raise GradlabError(f"results: {pages / bad[0]} is not what the committed run files give ({len(bad)} "
                           f"file(s) differ: {', '.join(bad)}); regenerate with: gradlab results --out {pages}")
