"""One writer per run file: an exclusive ``flock`` on ``<run>.lock`` beside it.

Whoever creates, overwrites or resumes a run file (``gradlab run``, a ``gradlab.Tracker``)
takes the lock before touching the file or its checkpoint, and holds it until the file is
closed. A second writer is refused with one line naming the holder's pid and host; readers
never take the lock. The kernel drops a ``flock`` when its process dies, so a lock left by
a killed run is simply taken over; the holder's pid/host written in the lock file (and
cleared on a clean release) tell that a previous writer died, and the message says so.
Under torchrun only rank 0 writes, so only rank 0 locks.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from gradlab.errors import GradlabError


class RunLockedError(GradlabError):
    """Another live process is writing this run file."""


def lock_path(run: str | Path) -> Path:
    run = Path(run)
    return run.with_name(run.name + ".lock")


class RunLock:
    """``acquire()`` -> ``release()`` (or a ``with`` block). ``taken_over`` names a dead holder."""

    def __init__(self, run: str | Path):
        self.run = Path(run)
        self.path = lock_path(run)
        self.fd: int | None = None
        self.taken_over = ""  # "pid N on host H" when a dead writer's lock was taken over

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(f"{self.run} is being written by {holder} (lock {self.path}); wait for that run to "
                                 f"end, stop it, or choose another --out") from None
        previous = os.pread(fd, 512, 0).decode(errors="replace").strip()
        self.taken_over = previous
        me = f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        try:
            os.pwrite(fd, me.encode(), 0)
        except OSError:  # a full disk: the flock holds all the same, only the holder's name is missing
            pass
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)  # a clean release leaves no holder behind
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __del__(self) -> None:  # an abandoned holder (e.g. a Runner never run) lets go
        try:
            self.release()
        except OSError:
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
