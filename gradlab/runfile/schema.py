"""Run-file schema versions: read the current one, migrate older ones on read, refuse newer ones.

The root attribute ``schema`` is ``"gradlab.run/<N>"``. This gradlab writes and reads
``CURRENT`` (``SCHEMA``, below). A file written by an older gradlab is opened through a
migration registered in ``MIGRATIONS[N]``: a function that copies the old file into an
in-memory HDF5 file laid out as version ``N + 1`` (the file on disk is never modified).
Migrations chain, so a ``/0`` file becomes ``/1`` via ``MIGRATIONS[0]``. An older version
with no migration is refused with a message naming the fix; a newer one asks to upgrade.

To change the layout: bump ``SCHEMA``, and register here the function that turns
the previous version into the new one (with a test on a constructed old file).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import h5py

from gradlab.errors import RunFileError
from gradlab.runfile import names
SCHEMA = "gradlab.run/3"  # what this gradlab writes (gradlab.runfile.writer); CHANGES says what changed
PREFIX = "gradlab.run/"
CURRENT = int(SCHEMA.removeprefix(PREFIX))

# version N -> function(old file, new in-memory file) writing the layout of version N + 1.
MIGRATIONS: dict[int, Callable[[h5py.File, h5py.File], None]] = {}
# version N -> what changed from N - 1 (also written as the migrated file's ``migration`` attribute).
CHANGES: dict[int, str] = {
    2: "per-probe distance/<m> and layer_distance/<m> became distance_<m> and layer_distance_<m> (netCDF "
       "readers see only a group's own variables); dimension scales (/epoch, /layer, probes/<o>/batch, "
       "probes/<o>/image, params/step) and description/units attributes were added",
    3: "probes may be per-epoch orders (group attribute per_epoch_order: index [E, N] and batch_score [E, K], "
       "gradient-informed orders rebuilt at every theta_e) and carry a batching attribute (contiguous | "
       "stratified, probe <order>@strat); /timing/score_s",
}
# Versions whose files read unchanged as the next version (the change only added things): no copy.
READS_AS_NEXT = {2}


def _v1_to_v2(src: h5py.File, dst: h5py.File) -> None:
    """Schema 1 -> 2: copy everything, then flatten each probe's ``distance/<m>`` and
    ``layer_distance/<m>`` into ``distance_<m>`` and ``layer_distance_<m>``. (The scales and
    attributes of /2 are not added: readers do not need them, and ``Run.to_xarray`` builds
    its labels from ``gradlab.runfile.annotate``.)"""
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for key in src:
        src.copy(src[key], dst, name=key)
    for probe in dst.get(names.PROBES, {}):
        g = dst[names.probe(probe)]
        for old, new in (("distance", names.distance), ("layer_distance", names.layer_distance)):
            if old not in g:
                continue
            for measure in list(g[old]):
                dst.move(f"{g.name}/{old}/{measure}", new(probe, measure))
            del g[old]


MIGRATIONS[1] = _v1_to_v2

_memory_files = 0


def parse(schema: str) -> int | None:
    """The version number of a schema string, or None when it is not a gradlab run schema."""
    m = re.fullmatch(re.escape(PREFIX) + r"(\d+)", schema.strip())
    return int(m.group(1)) if m else None


def _in_memory(path: Path) -> h5py.File:
    global _memory_files
    _memory_files += 1
    return h5py.File(f"{path.name}.migrated.{_memory_files}", "w", driver="core", backing_store=False)


def resolve(path: Path, f: h5py.File, schema: str) -> h5py.File:
    """Return a file in the current layout for ``f`` (opened read-only), or raise RunFileError.

    Closes ``f`` when it returns another file or raises.
    """
    version = parse(schema)
    if version == CURRENT:
        return f
    if version is None:
        f.close()
        raise RunFileError(f"{path} has an unknown schema {schema!r}; pass a file written by gradlab run")
    if version > CURRENT:
        f.close()
        raise RunFileError(f"{path} was written with schema {schema}, newer than this gradlab reads "
                           f"({PREFIX}{CURRENT}): upgrade gradlab to open it")
    chain = [v for v in range(version, CURRENT) if v not in READS_AS_NEXT]
    if not chain:
        return f
    missing = [v for v in chain if v not in MIGRATIONS]
    if missing:
        f.close()
        raise RunFileError(f"{path} was written with schema {schema}, which this gradlab ({PREFIX}{CURRENT}) "
                           f"no longer reads (no migration from {PREFIX}{missing[0]}); open it with the gradlab "
                           f"version that wrote it (see its gradlab_version attribute) or re-run the study")
    src = f
    try:
        for v in chain:
            dst = _in_memory(path)
            MIGRATIONS[v](src, dst)
            dst.attrs["schema"] = f"{PREFIX}{v + 1}"
            dst.attrs["migrated_from"] = schema
            dst.attrs["migration"] = CHANGES.get(v + 1, "")
            src.close()
            src = dst
        src.attrs["schema"] = f"{PREFIX}{CURRENT}"  # the steps read as their next version need no copy
    except Exception as exc:
        src.close()
        raise RunFileError(f"{path}: migrating schema {schema} to {PREFIX}{CURRENT} failed ({exc}); "
                           f"re-run the study with this gradlab") from exc
    return src
