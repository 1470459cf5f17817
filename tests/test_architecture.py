"""The architecture holds: parts import in one direction, registries list without torch, every
registered name resolves, and no module outgrows its responsibility."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from gradlab import registry

SRC = Path(__file__).resolve().parents[1] / "gradlab"


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "gradlab"


def _imports(path: Path, module: str) -> set[str]:
    """Every gradlab module named by any import statement of ``path``, inside functions too."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            out |= {name} | {f"{name}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("gradlab.")}


def part_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        for target in _imports(path, module):
            a, b = _part(module), _part(target)
            if a != b and a != "gradlab":
                graph.setdefault(a, set()).add(b)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_no_import_cycle_between_parts():
    assert _cycle(part_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_registry_config_and_quantities_import_no_torch():
    code = ("import sys, gradlab.registry, gradlab.config, gradlab.quantities, gradlab.cli; "
            "print(sorted(m for m in ('torch', 'h5py', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("concept", list(registry.ALL))
def test_every_registered_name_resolves_to_its_implementation(concept):
    for name, entry in registry.ALL[concept].items():
        obj = entry.load()
        assert callable(obj), (concept, name)
        declared = getattr(obj, "name", None)
        if isinstance(declared, str) and declared:
            assert declared == name, (concept, name, declared)


def test_unknown_names_are_refused_with_the_nearest():
    from gradlab.errors import ConfigError

    with pytest.raises(ConfigError, match='did you mean "intensity"'):
        registry.METRICS.check("intensty")
    with pytest.raises(ConfigError, match='add "random" to probes'):
        registry.check_reference(registry.needs_full(["align", "loss"]), ["align", "loss"])
    registry.check_reference(registry.needs_full(["loss"]), ["loss"])  # loss needs no full gradient


def test_probe_names_round_trip():
    for order in registry.probe_orders():
        for cut in registry.BATCHINGS:
            assert registry.split_probe_name(registry.probe_name(order, cut)) == (order, cut)


def test_no_module_is_longer_than_500_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_no_import_cycle_inside_a_folder():
    """Within one package folder, modules import one way (import-linter's layers cover the
    folders; this covers the modules inside each): no module reaches one that reaches it back."""
    import itertools
    from collections import defaultdict

    import grimp

    graph = grimp.build_graph("gradlab")
    folders = defaultdict(list)
    for m in graph.modules:
        folders[m.rsplit(".", 1)[0]].append(m)
    cycles = []
    for folder, mods in folders.items():
        inside = lambda chain: chain and all(x.rsplit(".", 1)[0] == folder for x in chain)  # noqa: E731
        for a, b in itertools.combinations(sorted(mods), 2):
            ab = graph.find_shortest_chain(importer=a, imported=b)
            ba = graph.find_shortest_chain(importer=b, imported=a)
            if inside(ab) and inside(ba):
                cycles.append((ab, ba))
    assert not cycles, cycles
