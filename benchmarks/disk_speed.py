"""HDF5 write speed of the ``disk`` gradient store vs raw sequential writes of the same bytes.

Alternates (raw, store, raw, store, ...) in one process on the same directory:
- raw: ``write`` of each gradient's bytes to a plain file, then ``fsync``;
- store: ``DiskStore.put`` of each gradient (background writer thread, HDF5), then the
  writer drained, the HDF5 file flushed and ``fsync``-ed. Also printed: how long the
  ``put`` calls themselves blocked the caller (what a probe pass feels), and the speed of
  the store's sequential read-back (through the page cache: no root to drop it).
Prints median MB/s and the store/raw ratio.

    nice -n 10 python benchmarks/disk_speed.py                      # ~1 min, writes 3 x 2 x 0.7 GB
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

from _common import conditions, timer
from gradlab.track.stores import DiskStore


def raw_write(path: Path, rows: list[torch.Tensor]) -> float:
    t = timer()
    with open(path, "wb", buffering=0) as f:
        for r in rows:
            f.write(memoryview(r.numpy()).cast("B"))
        os.fsync(f.fileno())
    dt = timer() - t
    path.unlink()
    return dt


def store_write(directory: Path, rows: list[torch.Tensor], dtype: str) -> tuple[float, float, float]:
    st = DiskStore(dtype, scratch_dir=str(directory))
    st.begin(len(rows), rows[0].numel(), torch.device("cpu"))
    t = timer()
    for k, r in enumerate(rows):
        st.put(k, r)
    t_put = timer() - t
    st._finish_writes()
    fd = os.open(st.path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    t_write = timer() - t
    t = timer()
    n = sum(c.shape[0] for _, c in st.chunks())
    t_read = timer() - t
    assert n == len(rows)
    st.end()
    return t_write, t_put, t_read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=11_173_962, help="parameters per gradient (default resnet18)")
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--dir", default=tempfile.gettempdir())
    a = ap.parse_args()
    d = Path(a.dir)
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randn(a.size, generator=gen).to(getattr(torch, a.dtype)) for _ in range(a.batches)]
    if rows[0].dtype == torch.bfloat16:
        rows_raw = [r.view(torch.int16) for r in rows]
    else:
        rows_raw = rows
    mb = sum(r.numel() * r.element_size() for r in rows) / 1e6
    print(f"disk write speed: {a.batches} x {a.size:,} {a.dtype} = {mb:.0f} MB per pass into {d}; {conditions()}")
    raw, wr, put, rd = [], [], [], []
    for _ in range(a.reps):
        raw.append(raw_write(d / f"gradlab-raw-{os.getpid()}.bin", rows_raw))
        w, p, r = store_write(d, rows, a.dtype)
        wr.append(w); put.append(p); rd.append(r)
    mr, mw = statistics.median(raw), statistics.median(wr)
    print(f"raw write + fsync      {mb / mr:8.0f} MB/s")
    print(f"HDF5 store + fsync     {mb / mw:8.0f} MB/s   store/raw = {mr / mw:.2f}")
    print(f"  put() blocked caller {statistics.median(put):8.2f} s of {mw:.2f} s (bounded queue of {DiskStore.queue_depth})")
    print(f"HDF5 store read-back   {mb / statistics.median(rd):8.0f} MB/s   (page cache)")


if __name__ == "__main__":
    main()
