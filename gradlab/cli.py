"""Command line: ``gradlab run | scores | inspect | report | watch | export | results``
(reference: docs/reference/cli.md).

Every ``GradlabError`` ends the command with one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradlab.registry import DATASETS, METRICS, RANDOM
from gradlab.errors import GradlabError


def _cmd_run(args: argparse.Namespace) -> int:
    from gradlab.config import load_config
    from gradlab.train.runner import run_study
    from gradlab.train.variants import parse_seeds, variant_configs, with_seeds

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"output.path={Path(args.out).as_posix()!r}".replace("'", '"'))
    configs = variant_configs(args.study, args.variant, overrides) if args.variant else \
        [("", load_config(args.study, overrides))]
    seeds = parse_seeds(args.seeds) if args.seeds else list(configs[0][1].train.seeds)
    configs = with_seeds(configs, seeds)
    if len(configs) == 1:
        cfg = configs[0][1]
        run_study(cfg, overwrite=args.overwrite, progress=not args.quiet, resume=args.resume,
                  **_score_kwargs(args, cfg))
        return 0
    for name, cfg in configs:  # check every output before the first run
        if Path(cfg.output.path).exists() and not (args.overwrite or args.resume):
            raise GradlabError(f"{cfg.output.path} ({name}) already exists; pass --overwrite to replace it or "
                               f"--resume to continue it")
    for i, (name, cfg) in enumerate(configs, 1):
        print(f"{name} ({i}/{len(configs)}) -> {cfg.output.path}")
        run_study(cfg, overwrite=args.overwrite, progress=not args.quiet,
                  resume=args.resume and Path(cfg.output.path).exists(), **_score_kwargs(args, cfg))
    return 0


def _score_kwargs(args: argparse.Namespace, cfg) -> dict:
    """Reuse scores from `gradlab scores` (and cache new ones) unless --no-score-cache."""
    if args.no_score_cache:
        return {}
    from gradlab.data.scores import cached_scores

    return {"scores": cached_scores(args.scores or Path(cfg.data.root) / "scores.h5", progress=not args.quiet)}


def _cmd_scores(args: argparse.Namespace) -> int:
    from gradlab.config import DataConfig
    from gradlab.data.datasets import load_split
    from gradlab.metrics import get_metric
    from gradlab.data.scores import compute_all

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if RANDOM in metrics:
        raise GradlabError(f'"{RANDOM}" is a seeded shuffle, not a metric: it has no per-image score to cache; '
                           f"list only {', '.join(METRICS)} in --metrics")
    for m in metrics:
        get_metric(m)  # unknown names fail before any loading
    data = load_split(DataConfig(dataset=args.dataset, root=args.root, subset=args.subset), train=True)
    out = Path(args.out) if args.out else Path(args.root) / "scores.h5"
    print(f"gradlab scores: {args.dataset} train, {len(data):,} images -> {out}")
    compute_all(data, metrics, out, progress=not args.quiet)
    return 0


def _hdf5_guard(paths: list[str], fn):
    """Run ``fn()``; an HDF5 error from a damaged object in a run file becomes one line naming the file."""
    try:
        return fn()
    except (OSError, KeyError, RuntimeError) as exc:
        text = " ".join(str(exc).split())
        if not any(s in text for s in ("Unable to", "object header", "filter", "checksum", "HDF5")):
            raise
        raise GradlabError(f"{', '.join(paths)}: damaged run file ({text}); restore it from a copy or rerun it "
                           f"(gradlab run --overwrite)") from None


def _cmd_inspect(args: argparse.Namespace) -> int:
    from gradlab.report.inspect import describe

    print(_hdf5_guard([args.run], lambda: describe(args.run)))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    if args.bins < 2:
        raise GradlabError(f"--bins must be at least 2 (4 = quartiles, 10 = deciles), got {args.bins}")
    if args.perm < 1:
        raise GradlabError(f"--perm must be at least 1 (permutations for the chance level; default 2000), "
                           f"got {args.perm}")
    from gradlab.report.page import write_report

    out = Path(args.out) if args.out else Path(args.runs[0]).with_suffix(".report.html")
    rep = _hdf5_guard(args.runs, lambda: write_report(args.runs, out, png_dir=args.png, measure=args.measure,
                                                      bins=args.bins, n_perm=args.perm))
    print(f"report: {rep.html} ({rep.figures} figures)" + (f", {len(rep.pngs)} PNGs in {args.png}" if rep.pngs else ""))
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from gradlab.watch import Watcher, describe, serve

    served = not args.no_serve
    out = args.out or (None if served else str(Path(args.run).with_suffix(".live.html")))
    w = Watcher(args.run, out, served=served, interval=args.interval, n_perm=args.perm, measure=args.measure,
                bins=args.bins)
    w.poll()
    if served:
        server = serve(w, args.port)
        print(f"watch: http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
    if out:
        print(f"watch: {out} is rewritten as each epoch commits", flush=True)
    print(describe(w.state), flush=True)
    state = w.run(on_change=lambda s: print(describe(s), flush=True))
    if served:
        print("watch: the run has ended; the page stays served until Ctrl-C", flush=True)
        import threading

        threading.Event().wait()  # until Ctrl-C (KeyboardInterrupt: main prints "interrupted")
    return 0 if state.status == "complete" else 1


def _cmd_export(args: argparse.Namespace) -> int:
    if not args.out and not args.tensorboard:
        raise GradlabError("gradlab export needs --out DIR (CSV/Parquet tables) and/or --tensorboard DIR "
                           "(TensorBoard event files)")
    if args.tensorboard:
        from gradlab.loggers.export import export_tensorboard

        n = _hdf5_guard([args.run], lambda: export_tensorboard(args.run, args.tensorboard))
        print(f"export: {n} epochs as TensorBoard scalars in {args.tensorboard} (tensorboard --logdir "
              f"{args.tensorboard})")
    if args.out:
        from gradlab.report.export import export

        files = export(args.run, args.out, args.format)
        print(f"export: {len(files)} {args.format} tables in {args.out} ({', '.join(f.name for f in files)})")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from gradlab import results

    out = Path(args.out)
    if args.check:
        results.first_difference(out)
        print(f"results: every page in {out} is what the run files in results/ give")
        return 0
    files = results.generate(out)
    print(f"results: {len(files)} files in {out} ({', '.join(f.name for f in files)})")
    return 0


def _cmd_names(args: argparse.Namespace) -> int:
    """Every name a study file may use, by concept: gradlab's own and the installed plugins'."""
    from gradlab import quantities, registry

    for concept, reg in registry.ALL.items():
        own = {n: reg[n].summary for n in reg.names()}
        if reg is registry.QUANTITIES:  # gradlab's own are on by their options, not named
            own = {n: f"stored when on ({q.when or 'always'})" for n, q in quantities.QUANTITIES.items()}
        print(f"{concept} ({reg.key}; or an import path package.module:Name):")
        for name, summary in own.items():
            print(f"  {name:<16} gradlab   {summary}")
        plugins = reg.plugins()
        for name, e in plugins.items():
            print(f"  {name:<16} {e.origin}   {e.summary}")
    return 0


def _report_options(p: argparse.ArgumentParser, measure_help: str) -> None:
    """The report's analysis options, shared by ``gradlab report`` and ``gradlab watch``."""
    p.add_argument("--measure", default="l2", help=f"distance measure {measure_help} (default l2)")
    p.add_argument("--bins", type=int, default=4, help="score quantile bins in the phase summary (4 = quartiles)")
    p.add_argument("--perm", type=int, default=2000, help="permutations for the chance level (default 2000)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gradlab", description="Gradient-distance studies during training.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a study file and write its run file")
    r.add_argument("study", help="study TOML file, e.g. studies/quickstart.toml")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (TOML value)")
    r.add_argument("--out", help="run file path (overrides output.path)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run file from its checkpoint (a missing file starts fresh)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--variant", action="append", metavar="NAME",
                   help="run variant NAME of the study's [variants] table (repeatable; 'all' = every variant); "
                        "output goes to <output stem>-NAME.h5")
    r.add_argument("--seeds", metavar="LIST",
                   help="run once per seed, e.g. 0,1,2 or 0-4 (overrides train.seed/train.seeds); output goes to "
                        "<output stem>-s<seed>.h5, after -NAME with --variant")
    r.add_argument("--scores", metavar="PATH", help="score cache file (default: <data.root>/scores.h5)")
    r.add_argument("--no-score-cache", action="store_true",
                   help="compute metric scores without reading/writing a cache")
    r.set_defaults(func=_cmd_run)
    s = sub.add_parser("scores", help="compute and cache per-image metric scores of a training set")
    s.add_argument("--dataset", default="cifar10",
                   help=f"{' | '.join(DATASETS)} | package.module:load (default cifar10)")
    s.add_argument("--metrics", default=",".join(METRICS),
                   help="comma-separated metric names (a plugin's names and import paths package.module:Name too)")
    s.add_argument("--root", default="data", help="dataset folder (as data.root; default data)")
    s.add_argument("--subset", type=int, default=0, help="first N training images only (0 = all)")
    s.add_argument("--out", help="cache file (default: <root>/scores.h5)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_scores)
    i = sub.add_parser("inspect", help="print a summary of a run file")
    i.add_argument("run", help="run file (.h5)")
    i.set_defaults(func=_cmd_inspect)
    rp = sub.add_parser("report", help="write one self-contained HTML report for one or several runs")
    rp.add_argument("runs", nargs="+", metavar="RUN.h5", help="run files; several are compared side by side")
    rp.add_argument("--out", help="HTML file (default: first run's name + .report.html)")
    rp.add_argument("--png", metavar="DIR", help="also export every figure as PNG into DIR (needs Chromium)")
    _report_options(rp, "for heatmaps and the summary")
    rp.set_defaults(func=_cmd_report)
    w = sub.add_parser("watch", help="a live report of a run in progress: served on localhost and/or rewritten in "
                                     "place, updated as each epoch commits")
    w.add_argument("run", help="run file (.h5), being written by gradlab run, a Tracker or torchrun")
    w.add_argument("--port", type=int, default=8765, help="localhost port of the page (default 8765; 0: any free)")
    w.add_argument("--out", metavar="FILE", help="also rewrite this HTML file in place at each epoch")
    w.add_argument("--no-serve", action="store_true",
                   help="no server: only rewrite --out (default <run>.live.html); exits when the run ends")
    w.add_argument("--interval", type=float, default=2.0, help="seconds between looks at the file (default 2)")
    _report_options(w, "of the report")
    w.set_defaults(func=_cmd_watch)
    ex = sub.add_parser("export", help="write a run's tidy tables (distances, norms, curves, ...) as CSV or Parquet, "
                                       "or its per-epoch summary as TensorBoard scalars")
    ex.add_argument("run", help="run file (.h5)")
    ex.add_argument("--format", choices=("csv", "parquet"), default="csv", help="file format (default csv)")
    ex.add_argument("--out", metavar="DIR", help="folder for <table>.<format> files")
    ex.add_argument("--tensorboard", metavar="DIR", help="write every committed epoch's summary (the values a "
                    "TensorBoardLogger gets live) as event files in DIR (needs the loggers extra)")
    ex.set_defaults(func=_cmd_export)
    nm = sub.add_parser("names", help="list every name a study file may use (gradlab's and installed plugins')")
    nm.set_defaults(func=_cmd_names)
    rs = sub.add_parser("results", help="regenerate the results pages (tables, figures, provenance) from the run "
                                        "files committed in results/")
    rs.add_argument("--out", default="docs/results", metavar="DIR", help="folder of the pages (default docs/results)")
    rs.add_argument("--check", action="store_true",
                    help="write nothing; fail (exit 2) naming the first page in --out that differs from what the "
                         "run files give")
    rs.set_defaults(func=_cmd_results)
    return p


def _rank_tag() -> str:
    """`` (rank R)`` under torchrun, where every rank prints its own errors."""
    import os

    return f" (rank {os.environ.get('RANK', '?')})" if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `gradlab inspect run.h5 | head`: the reader left; end quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 1
    except OSError as exc:
        from gradlab.errors import is_disk_full

        if not is_disk_full(exc):
            raise
        print(f"gradlab: error{_rank_tag()}: disk full ({exc}); free space and run the command again "
              f"(gradlab run: add --resume; committed epochs are kept)", file=sys.stderr)
        return 2
    except GradlabError as exc:
        print(f"gradlab: error{_rank_tag()}: " + " ".join(str(exc).splitlines()), file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print("gradlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
