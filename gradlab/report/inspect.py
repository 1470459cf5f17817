"""``gradlab inspect``: a readable text summary of one run file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gradlab.runfile import names
from gradlab.runfile.reader import Run, open_run


def _shape(s: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(x) for x in s) + "]" if s else "scalar"


def describe(path: str | Path) -> str:
    """Status (with failure reason), epochs, probes, dataset shapes, last metrics, config, provenance."""
    with open_run(path) as run:
        return _describe(run)


def _describe(run: Run) -> str:
    out: list[str] = []
    planned = run.config.get("train", {}).get("epochs", "?")
    out.append(f"{run.path}: status {run.status}, {run.epochs_done} of {planned} epoch(s) committed")
    if run.failure:
        out.append(f"  failure      {run.failure}")
    if run.epochs_done:
        out.append(f"  phases       {run.num_phases} so far (milestones {run.milestones})")
    out.append(f"  schema       {run.schema if run.schema is not None else '?'}"
               + (f" (migrated from {run.migrated_from})" if run.migrated_from is not None else ""))
    m, d, t = (run.config.get(k, {}) for k in ("model", "data", "train"))
    layers = run.layers()
    out.append(f"  model        {m.get('name')} (norm {m.get('norm')}), {int(layers.numel.sum()):,} parameters "
               f"in {len(layers)} tensors")
    out.append(f"  data         {d.get('dataset')}, subset {d.get('subset')}, batch size {t.get('batch_size')}")
    curves = run.train_curves()
    if len(curves):
        last = curves.iloc[-1]
        parts = [f"{c.replace('_', ' ')} {last[c]:.4g}" for c in curves.columns if c != "epoch"]
        out.append(f"  last epoch   {int(last.epoch)}: " + ", ".join(parts))
    out.append("")
    out.append(f"probes ({len(run.probes)}):")
    for p in run.probes:
        k = run.num_batches(p)
        scores = (run.batch_score_matrix(p) if run.is_per_epoch(p) else run.batch_scores(p)) if k else np.array([])
        rng = f", scores {scores.min():.4g}–{scores.max():.4g}" if scores.size else ""
        how = ("" if run.batching(p) == "contiguous" else f" ({run.batching(p)} cut)") + (
            " (order rebuilt at every epoch's parameters)" if run.is_per_epoch(p) else "")
        attrs = run.probe_attrs(p)
        sizes = attrs.get(names.BATCH_SIZES)
        size = f"{int(np.min(sizes))}–{int(np.max(sizes))}" if sizes is not None else attrs.get("batch_size", "?")
        inputs = attrs.get(names.PREPROCESSING)
        out.append(f"  {p}: {k} batches of {size}{how}, {run.score_label(p)}{rng}; "
                   f"measures {', '.join(run.measures(p)) or 'none'}" + (f"; inputs: {inputs}" if inputs else ""))
    out.append("")
    out.append("datasets (rows beyond epochs_done are uncommitted and ignored by readers):")
    ds = run.datasets()
    width = max((len(n) for n in ds.name), default=0)
    for r in ds.itertuples():
        out.append(f"  {r.name:<{width}}  {_shape(r.shape):<14} {r.dtype}")
    out.append("")
    out.append("config:")
    for sec in sorted(run.config):
        vals = run.config[sec]
        if isinstance(vals, dict):
            out.append(f"  [{sec}] " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(vals.items())))
        else:
            out.append(f"  {sec} = {json.dumps(vals)}")
    out.append("")
    out.append("provenance:")
    width = max((len(k) for k in run.provenance), default=0)
    for k, v in run.provenance.items():
        out.append(f"  {k:<{width}}  {v}")
    return "\n".join(out)
