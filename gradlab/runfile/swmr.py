"""Crash-safe HDF5 opening: SWMR writer, SWMR-aware reader, recovery after a kill.

Why SWMR: a file opened for writing with ``libver="latest"`` carries "open for write"
flags in its superblock until it is closed. After a SIGKILL the library refuses to open
such a file at all ("file is already open for write"), and a kill in the middle of a
normal (non-SWMR) metadata write can leave it inconsistent. In SWMR-write mode HDF5 orders
its metadata writes so that the file on disk is always consistent, and any reader opening it
with ``swmr=True`` (live, or after the writer was killed) sees the last flushed state.

SWMR forbids creating datasets or attributes while it is on. ``RunWriter`` therefore drops
out of SWMR for the few milliseconds in which it creates new datasets (normally once, at the
first commit) and goes straight back in (see ``store.py``).

``open_clearing_flags`` is the equivalent of ``h5clear -s``: it sets HDF5's own
``clear_status_flags`` file-access property (the one h5clear uses) so a killed run file can
be reopened for writing by ``--resume``.

File locking. HDF5 shares one open file per process, and a second open must ask for the same
file-locking flags as the first ("file locking flag values don't match" otherwise). Readers
therefore open with h5py's default flags first, the ones h5py and xarray's ``h5netcdf`` use, and
then with the other settings (``READ_LOCKINGS``), so a run already open in this process through
h5py or xarray opens in gradlab too, and the other way round. The writer keeps ``locking=False``
(a reader's shared HDF5 lock must never stop it); ``<run>.lock`` keeps out a second writer.
"""
from __future__ import annotations

import ctypes
import glob
import os
import time
from pathlib import Path

import h5py


# Format bounds of a run file opened for writing. SWMR needs at least the 1.10 format. The low
# bound stays at 1.10, not "latest": from 1.12 on, HDF5 writes dimension-scale references
# (REFERENCE_LIST) in a new encoding that HDF5 1.10 tools (Debian's h5dump, h5ls; MATLAB,
# older netCDF) cannot read, and h5dump 1.10 even crashes on them.
WRITE_LIBVER = ("v110", "latest")


def _fapl() -> h5py.h5p.PropFAID:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_LATEST)  # WRITE_LIBVER
    try:
        fapl.set_file_locking(False, True)
    except (AttributeError, TypeError):  # old h5py/HDF5: no locking control
        pass
    return fapl


# h5py's default (None: HDF5's best-effort locking, what h5py.File and xarray use) first, then
# the flags another handle of this process may hold (gradlab's writer: False).
READ_LOCKINGS: tuple[bool | None, ...] = (None, False, True)
# HDF5's words for "this file is already open in this process with other access flags" or "another
# program holds its lock": the file is fine, its opener is not; never reported as damage.
OPEN_ELSEWHERE = ("flag values don't match", "unable to lock file", "already open for read-only",
                  "SWMR read access flag not the same", "file close degree doesn't match")


def lock_mismatch(exc: BaseException) -> bool:
    """Whether ``exc`` says the file is open in this process with other file-locking flags."""
    return "flag values don't match" in str(exc)


def open_elsewhere(exc: BaseException) -> bool:
    """Whether ``exc`` is about the file being open elsewhere (or locked), not about its bytes."""
    return any(words in str(exc) for words in OPEN_ELSEWHERE)


def _open_r(path: str | Path, **kw: object) -> h5py.File:
    """``h5py.File(path, "r")`` with the first locking setting of ``READ_LOCKINGS`` this process accepts."""
    for i, locking in enumerate(READ_LOCKINGS):
        try:
            return h5py.File(path, "r", libver="latest", locking=locking, **kw)
        except OSError as exc:
            if not lock_mismatch(exc) or i == len(READ_LOCKINGS) - 1:
                raise
    raise AssertionError("unreachable")


def open_read(path: str | Path, retry_s: float = 1.0) -> h5py.File:
    """Open for reading: a closed file normally; a file being written (or whose SWMR writer
    was killed) as an SWMR reader. A live writer is briefly out of SWMR while it creates
    datasets, so that case is retried for ``retry_s``. A handle already open in this process
    (h5py, xarray, gradlab's writer) is shared with whatever locking flags it has. Raises
    ``OSError`` when nothing works."""
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return _open_r(path)
        except OSError as exc:
            if "already open for write" not in str(exc):
                raise
        try:
            return _open_r(path, swmr=True)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _hdf5_lib() -> ctypes.CDLL | None:
    """The libhdf5 that h5py is using (found in this process's memory map, else next to h5py)."""
    candidates: list[str] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                p = line.split()[-1] if line.strip() else ""
                if "libhdf5" in os.path.basename(p) and "_hl" not in os.path.basename(p) and p not in candidates:
                    candidates.append(p)
    except OSError:
        pass
    here = os.path.dirname(h5py.__file__)
    candidates += sorted(glob.glob(os.path.join(here, "..", "h5py.libs", "libhdf5-*.so*")))
    candidates += sorted(glob.glob(os.path.join(here, ".dylibs", "libhdf5.*.dylib")))
    for c in candidates:
        try:
            lib = ctypes.CDLL(c)
            lib.H5Pset  # noqa: B018 - check the symbol exists
            return lib
        except (OSError, AttributeError):
            continue
    return None


def open_clearing_flags(path: str | Path) -> h5py.File:
    """Open read/write (not SWMR), clearing the superblock's "open for write" flags left by
    a killed writer, like ``h5clear -s``. Raises ``OSError`` when the file cannot be opened."""
    try:
        return h5py.File(path, "r+", libver=WRITE_LIBVER, locking=False)
    except OSError as exc:
        if "already open for write" not in str(exc):
            raise
    lib = _hdf5_lib()
    if lib is None:
        raise OSError(f"{path} was left open by a killed writer and the HDF5 library could not be found "
                      f"to clear its flags; run `h5clear -s {path}`")
    fapl = _fapl()
    lib.H5Pset.argtypes = [ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p]
    lib.H5Pset.restype = ctypes.c_int
    clear = ctypes.c_bool(True)
    if lib.H5Pset(fapl.id, b"clear_status_flags", ctypes.byref(clear)) < 0:
        raise OSError(f"could not clear the status flags of {path}; run `h5clear -s {path}`")
    fid = h5py.h5f.open(os.fsencode(str(path)), h5py.h5f.ACC_RDWR, fapl=fapl)
    return h5py.File(fid)



def stop_writing(f: h5py.File) -> None:
    """Point HDF5's descriptor of ``f`` at ``/dev/null``: from here on nothing reaches the file on disk.

    After a failed write (ENOSPC, EIO) HDF5's state is unreliable: closing normally flushes
    again, fails again, and can leave a file that SWMR readers refuse, or crash the process (a
    dataset handle closed after its file). With the descriptor on ``/dev/null`` the flushes of
    closing succeed and reach nothing: the file stays exactly as the failure left it, as a kill
    would leave it, which SWMR keeps readable to its last commit. Close ``f`` afterwards.
    """
    if not f.id.valid:
        return
    try:
        fd = f.id.get_vfd_handle()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except (OSError, ValueError, RuntimeError, TypeError):  # a driver without a descriptor: nothing to point
        pass
