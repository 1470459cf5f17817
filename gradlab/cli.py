"""Command line: ``gradlab run | inspect`` (see README.md).

Every ``GradlabError`` ends the command with one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import GradlabError


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .runner import run_study

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"output.path={Path(args.out).as_posix()!r}".replace("'", '"'))
    if args.variant:
        return _run_variants(args, overrides)
    cfg = load_config(args.study, overrides)
    run_study(cfg, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def _run_variants(args: argparse.Namespace, overrides: list[str]) -> int:
    from .errors import GradlabError
    from .runner import run_study
    from .variants import variant_configs

    configs = variant_configs(args.study, args.variant, overrides)
    for name, cfg in configs:  # check every output before the first run
        if Path(cfg.output.path).exists() and not args.overwrite:
            raise GradlabError(f"{cfg.output.path} (variant {name}) already exists; pass --overwrite to replace it")
    for i, (name, cfg) in enumerate(configs, 1):
        print(f"variant {name} ({i}/{len(configs)}) -> {cfg.output.path}")
        run_study(cfg, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    import json

    from .analysis import open_run

    with open_run(args.run) as run:
        print(f"{run.path}: status {run.status}, {run.epochs_done} epoch(s) committed")
        if run.failure:
            print(f"  failure: {run.failure}")
        for k, v in run.provenance.items():
            print(f"  {k}: {v}")
        layers = run.layers()
        print(f"  layers: {len(layers)} tensors, {int(layers.numel.sum()):,} parameters")
        for p in run.probes:
            g = run.f[f"probes/{p}"]
            items = []
            g.visititems(lambda n, o: items.append(f"{n}{list(o.shape)}") if hasattr(o, "shape") else None)
            print(f"  probe {p}: {', '.join(items)}")
        curves = run.train_curves()
        if len(curves):
            last = curves.iloc[-1]
            print("  last epoch: " + ", ".join(f"{c} {last[c]:.4g}" for c in curves.columns if c != "epoch"))
        print("  config: " + json.dumps(run.config, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gradlab", description="Gradient-distance studies during training.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a study file and write its run file")
    r.add_argument("study", help="study TOML file, e.g. studies/quickstart.toml")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (TOML value)")
    r.add_argument("--out", help="run file path (overrides output.path)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--variant", action="append", metavar="NAME",
                   help="run variant NAME of the study's [variants] table (repeatable; 'all' = every variant); "
                        "output goes to <output stem>-NAME.h5")
    r.set_defaults(func=_cmd_run)
    i = sub.add_parser("inspect", help="print a summary of a run file")
    i.add_argument("run", help="run file (.h5)")
    i.set_defaults(func=_cmd_inspect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GradlabError as exc:
        print(f"gradlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gradlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
