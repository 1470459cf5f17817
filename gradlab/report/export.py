"""``gradlab export``: a run's tidy tables as CSV or Parquet files, for R, Julia or a spreadsheet.

Each table has the columns of the matching ``Run`` method (committed epochs only); tables that
``Run`` returns per probe get a leading ``probe`` column and hold every probe:

=================  ==============================================
file               ``Run`` method
=================  ==============================================
distances          ``distances(probe, measure=None)``
layer_distances    ``layer_distances(probe, m)`` (+ ``measure``)
norms              ``norms(probe)``
noise_scale        ``noise_scale()``
train_curves       ``train_curves()``
param_stats        ``param_stats()``
batch_quantities   ``batch_table(probe)``: every (epoch, batch) quantity
epoch_quantities   ``epoch_table(probe)``: every per-epoch quantity
quantities         ``quantities(probe)``: each quantity's dims, units, description
=================  ==============================================
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from gradlab.errors import GradlabError
from gradlab.runfile import names
from gradlab.runfile.reader import Run

FORMATS = ("csv", "parquet")


def _per_probe(run: Run, table: Callable[[str], pd.DataFrame]) -> pd.DataFrame:
    frames = [table(p).assign(probe=p) for p in run.probes]
    if not frames:
        return pd.DataFrame({"probe": []})
    df = pd.concat(frames, ignore_index=True)
    return df[["probe", *[c for c in df.columns if c != "probe"]]]


def _layer_distances(run: Run, probe: str) -> pd.DataFrame:
    """Per-layer distances of every stored measure, with a ``measure`` column (empty without per_layer)."""
    frames = [run.layer_distances(probe, m).assign(measure=m) for m in run.measures(probe)
              if run.has(names.layer_distance(probe, m))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def tables(run: Run) -> dict[str, pd.DataFrame]:
    """Every exportable table of ``run`` (a table the run did not record is left out)."""
    out = {
        "distances": _per_probe(run, lambda p: run.distances(p, None)),
        "layer_distances": _per_probe(run, lambda p: _layer_distances(run, p)),
        "norms": _per_probe(run, run.norms),
        "noise_scale": run.noise_scale(),
        "train_curves": run.train_curves(),
        "param_stats": run.param_stats(),
        # every tracked quantity (gradlab.quantities), with its description and units beside it
        "batch_quantities": _per_probe(run, run.batch_table),
        "epoch_quantities": _per_probe(run, run.epoch_table),
        "quantities": _per_probe(run, run.quantities),
    }
    return {k: v for k, v in out.items() if len(v.columns) > 1 and (len(v) or k != "layer_distances")}


def _write(df: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "csv":
        df.to_csv(path, index=False)
        return
    try:
        df.to_parquet(path, engine="pyarrow", index=False)
    except ImportError:
        raise GradlabError("--format parquet needs pyarrow; pip install pyarrow (or use --format csv)") from None


def export(run_path: str | Path, out: str | Path, fmt: str = "csv") -> list[Path]:
    """Write ``run``'s tables to ``out/<table>.<fmt>``; returns the files written."""
    if fmt not in FORMATS:
        raise GradlabError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with Run(run_path) as run:
        for name, df in tables(run).items():
            path = out / f"{name}.{fmt}"
            _write(df, path, fmt)
            written.append(path)
    return written
