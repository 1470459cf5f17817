"""Study variants: named override lists in a study file's ``[variants]`` table.

A study file describes one run (its base config). A ``[variants]`` table adds named
variants, each a list of ``--set``-style overrides applied on top of the base::

    [variants]
    baseline = []
    alpha0.1 = ["model.series_weight=0.1"]

``gradlab run STUDY.toml --variant alpha0.1`` runs one (repeat ``--variant`` for several),
``--variant all`` runs every variant in file order. Variant NAME writes to the output path
with ``-NAME`` before the suffix (``runs/wm.h5`` -> ``runs/wm-alpha0.1.h5``). Every
variant's config is built and checked, and every output path checked, before the first
run starts, so a typo in the last variant costs nothing. Without ``--variant`` the base
config runs as before; the table is ignored.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

from gradlab import naming
from gradlab.config import StudyConfig, config_from_dict, read_toml
from gradlab.errors import ConfigError

ALL = "all"
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def read_variants(path: str | Path) -> dict[str, list[str]]:
    """The ``[variants]`` table of a study file (empty when it has none), checked."""
    return _variants_table(read_toml(path), path)


def _variants_table(raw: dict, path: str | Path) -> dict[str, list[str]]:
    table = raw.get("variants", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[variants] in {path} must be a table of name = [\"key=value\", ...]")
    out: dict[str, list[str]] = {}
    for name, items in table.items():
        naming.check_name(f"variant (in {path})", name)
        if not _NAME.match(name) or name in (ALL, ".", ".."):
            raise ConfigError(f'variant name "{name}" in {path}: use letters, digits and _ . + - '
                              f'(and not "all", "." or "..")')
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f'variants.{name} in {path} must be a list of "key=value" strings, got {items!r}')
        out[name] = list(items)
    return out


def variant_path(path: str | Path, name: str) -> str:
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{name}{p.suffix}"))


def variant_configs(study: str | Path, names: list[str], overrides: list[str] | None = None
                    ) -> list[tuple[str, StudyConfig]]:
    """``(name, config)`` per requested variant (``["all"]`` = all, in file order); ``overrides``
    (user ``--set``, including ``output.path``) apply after the variant's own."""
    raw = read_toml(study)  # parsed once for every variant
    table = _variants_table(raw, study)
    raw.pop("variants", None)
    if not table:
        raise ConfigError(f"{study} has no [variants] table; run it without --variant")
    wanted = list(table) if ALL in names else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in table]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)} in {study}; it has {', '.join(table)} (or use all)")
    out = []
    for name in wanted:
        cfg = config_from_dict(copy.deepcopy(raw), table[name] + list(overrides or []))
        cfg.output.path = variant_path(cfg.output.path, name)
        out.append((name, cfg))
    return out


def seed_path(path: str | Path, seed: int) -> str:
    p = Path(path)
    return str(p.with_name(f"{p.stem}-s{seed}{p.suffix}"))


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> a list of distinct seeds."""
    seeds: list[int] = []
    try:
        for part in (s.strip() for s in text.split(",") if s.strip()):
            lo, _, hi = part.partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise ConfigError(f'--seeds takes integers like "0,1,2" or "0-4", got {text!r}') from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs distinct seeds, got {text!r}")
    return seeds


def with_seeds(configs: list[tuple[str, StudyConfig]], seeds: list[int]) -> list[tuple[str, StudyConfig]]:
    """One config per (variant, seed): ``train.seed`` set and ``-s<seed>`` added to the output
    path (``runs/wm-alpha0.1.h5`` -> ``runs/wm-alpha0.1-s2.h5``). No seeds: unchanged."""
    if not seeds:
        return configs
    out = []
    for name, cfg in configs:
        for s in seeds:
            c = copy.deepcopy(cfg)
            c.train.seed, c.train.seeds = s, []
            c.output.path = seed_path(cfg.output.path, s)
            out.append((f"{name}-s{s}" if name else f"s{s}", c))
    return out
