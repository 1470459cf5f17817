"""One atomic file write for the whole package: a reader sees the old file or the new one,
never a torn one (temp file in the same folder, fsync, ``os.replace``, fsync of the folder).

The bytes are produced in memory first, so a full disk surfaces as the OS's own
``OSError(ENOSPC)`` from ``write`` (not as a library's internal error), and the previous
file stays intact.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save`` through ``atomic_write_bytes`` (serialised in memory first)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
