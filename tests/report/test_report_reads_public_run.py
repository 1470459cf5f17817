"""The read side (gradlab.report) reads run files only through the public ``Run`` API.

No raw h5py (``run.f``, ``.f[...]``, ``.f.attrs``, ``import h5py``) and no private ``Run``
methods (``run._rows``, ``r._read``, ``run._phases``, ...): the file layout stays the
reader's business, so a schema change touches ``gradlab/runfile/reader.py`` alone.
"""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

REPORT_DIR = Path(importlib.import_module("gradlab.report").__file__).parent
MODULES = sorted(REPORT_DIR.glob("*.py"))

FORBIDDEN_TEXT = (".f[", ".f.attrs", " in run.f", " in r.f", "import h5py", "from h5py")
PRIVATE_RUN_CALL = re.compile(r"\b(run|r)\._[a-z]")


def _offences(path: Path) -> list[str]:
    src = path.read_text(encoding="utf-8")
    out = []
    for no, line in enumerate(src.splitlines(), start=1):
        code = line.split("#", 1)[0]
        for text in FORBIDDEN_TEXT:
            if text in code:
                out.append(f"{path.name}:{no}: {text.strip()!r}: {line.strip()}")
        if PRIVATE_RUN_CALL.search(code):
            out.append(f"{path.name}:{no}: private Run method: {line.strip()}")
    modules = {a.asname or a.name.split(".")[0] for n in ast.walk(ast.parse(src))
               if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr == "f":
            out.append(f"{path.name}:{node.lineno}: raw h5py file access (.f)")
        elif node.attr.startswith("_") and not node.attr.startswith("__"):
            # X._name where X is not self/cls or an imported module: a private method of another object
            base = node.value
            if isinstance(base, ast.Name) and (base.id in ("self", "cls") or base.id in modules):
                continue
            out.append(f"{path.name}:{node.lineno}: private attribute {ast.unparse(node)}")
    return out


def test_report_modules_found():
    assert any(p.name == "page.py" for p in MODULES)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_reads_only_public_run_api(path: Path):
    offences = _offences(path)
    assert not offences, "gradlab.report must read run files through public Run methods only:\n" + "\n".join(offences)
