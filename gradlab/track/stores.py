"""Where one probe pass's batch gradients wait until the epoch's full gradient is known.

D[e, k] needs every batch gradient and their mean, and the mean is only known after the
last batch. A store receives the K flat gradients of one pass (``put``) and hands them
back in order, in row chunks (``chunks``), for the distance pass. Stores register in
``gradlab.registry.STORES`` under the name ``track.grads`` uses.
"""
from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from gradlab import registry
from gradlab.errors import ConfigError, GradlabError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class GradStore:
    """Interface: ``begin`` -> ``put`` x K -> ``chunks`` (any number of times) -> ``end``.

    Two optional hooks let a store avoid holding the K gradients at all:
    ``needs_replay`` stores get ``set_replay(fn)`` from ``probe_pass`` after the last ``put``,
    where ``fn()`` yields g_0..g_{K-1} again at the same theta_e (``recompute``); and a store
    whose ``reductions(full)`` returns ``(sq_dist, dot, sq_norm)`` replaces the exact distance
    pass with its own estimate (``sketch``). ``put`` may keep a reference to ``grad`` only
    after copying it: callers may reuse the buffer.
    """

    name = ""
    needs_replay = False  # True: chunks() recomputes the gradients via set_replay()
    exact = True  # False: D is an estimate (sketch)

    def __init__(self, dtype: str = "float32", **options):
        self.dtype = DTYPES[dtype]

    def set_replay(self, replay: Callable[[], Iterator[torch.Tensor]]) -> None:
        """``replay()`` yields the K flat gradients again, in order (only for ``needs_replay``)."""

    def reductions(self, full: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(|g_k - G|^2, <g_k, G>, |g_k|^2)`` per batch, or None to let the caller read ``chunks``."""
        return None

    def begin(self, num_batches: int, size: int, device: torch.device) -> None:
        raise NotImplementedError

    def put(self, k: int, grad: torch.Tensor) -> None:
        """Keep batch ``k``'s flat float32 gradient ``[P]``."""
        raise NotImplementedError

    def chunks(self, max_bytes: int = 256 << 20) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(first_k, grads [c, P])`` covering k = 0..K-1 in order."""
        raise NotImplementedError

    def end(self) -> None:
        """Release what the pass held."""

    # ------------------------------------------------------------ keep_grads (before end())
    def keeps(self, keep_grads: str, last_epoch: bool) -> bool:
        """Whether ``keep_grads`` ("none" | "last" | "all") saves this epoch's pass."""
        return keep_grads == "all" or (keep_grads == "last" and last_epoch)

    def kept(self) -> tuple[str, torch.Tensor]:
        """What is saved of this pass, before ``end``: ``("grads", [K, P])`` raw batch
        gradients, written whole as ``/probes/<o>/grads/epoch_<e>``."""
        chunks = [c for _, c in self.chunks()]
        return "grads", torch.cat(chunks) if chunks else torch.empty(0, 0, dtype=self.dtype)


def _sq_norm(g: torch.Tensor) -> torch.Tensor:
    """|g|^2 as float64 without a [P] temporary: cascade-summed float32 squares in 1M-element
    blocks (relative error ~1e-8; BLAS dot and vector_norm are ~1e-4 off at P ~ 1e7)."""
    return torch.stack([b.square().sum() for b in g.float().split(1 << 20)]).double().sum()


def _gib(num_batches: int, size: int, dtype: torch.dtype) -> float:
    return num_batches * size * torch.finfo(dtype).bits / 8 / 2**30


class MemoryStore(GradStore):
    """All K gradients in one ``[K, P]`` tensor in ``grad_dtype``: on the GPU when it fits
    there next to the probe pass (``gpu_headroom`` of the free memory left over), else in
    host RAM (pinned on CUDA machines, so the copies overlap)."""

    name = "memory"
    gpu_headroom = 0.3  # fraction of free GPU memory kept for activations of the probe pass

    def begin(self, num_batches: int, size: int, device: torch.device) -> None:
        nbytes = _gib(num_batches, size, self.dtype) * 2**30
        pin = False
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if nbytes > (1 - self.gpu_headroom) * free:
                device, pin = torch.device("cpu"), True
        try:
            self.grads = torch.empty(num_batches, size, dtype=self.dtype, device=device, pin_memory=pin)
        except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            gb = _gib(num_batches, size, self.dtype)
            raise ConfigError(
                f"track.grads = \"memory\" needs {gb:.1f} GiB for {num_batches} batch gradients of "
                f"{size:,} parameters and could not get it ({type(exc).__name__}); use "
                f"track.grad_dtype = \"bfloat16\" to halve it, or track.grads = \"disk\" | \"recompute\" | \"sketch\""
            ) from None

    def put(self, k: int, grad: torch.Tensor) -> None:
        self.grads[k].copy_(grad)

    def chunks(self, max_bytes: int = 256 << 20) -> Iterator[tuple[int, torch.Tensor]]:
        k, p = self.grads.shape
        rows = max(1, max_bytes // max(1, p * 4))  # chunks are upcast to float32 downstream
        for s in range(0, k, rows):
            yield s, self.grads[s:s + rows]

    def end(self) -> None:
        self.grads = None


class DiskStore(GradStore):
    """Gradients streamed to a scratch HDF5 file, read back once, sequentially, at epoch end.

    ``put`` hands a copy of the gradient to ONE background writer thread through a bounded
    queue (``queue_depth`` gradients in flight, so host memory stays O(depth * P)); the
    device-to-host copy and the write happen on that thread while the probe pass goes on.
    The scratch file lives in ``scratch_dir`` (default: the system temp dir) and is removed
    by ``end``. A write error in the thread is raised in the caller's thread as a
    ``GradlabError`` at the next ``put`` or at ``chunks``.
    """

    name = "disk"
    queue_depth = 4

    def __init__(self, dtype: str = "float32", scratch_dir: str | None = None, **options):
        super().__init__(dtype)
        self.scratch_dir = Path(scratch_dir) if scratch_dir else Path(tempfile.gettempdir())
        self.path: Path | None = None
        self.file = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.bytes_written = 0

    # ------------------------------------------------------------------ main thread
    def begin(self, num_batches: int, size: int, device: torch.device) -> None:
        import h5py

        self.num_batches, self.size = num_batches, size
        need = _gib(num_batches, size, self.dtype)
        try:
            self.scratch_dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.scratch_dir).free / 2**30
        except OSError as exc:
            raise ConfigError(f"track.grads = \"disk\": scratch directory {self.scratch_dir} is unusable ({exc}); "
                              f"set track.scratch_dir to a writable directory") from None
        if free < need * 1.05:
            raise ConfigError(f"track.grads = \"disk\" needs {need:.1f} GiB of scratch space per probe pass but "
                              f"{self.scratch_dir} has {free:.1f} GiB free; set track.scratch_dir to a larger disk, "
                              f"track.grad_dtype = \"bfloat16\" to halve it, or track.grads = \"recompute\"")
        fd, name = tempfile.mkstemp(prefix="gradlab-grads-", suffix=".h5", dir=self.scratch_dir)
        os.close(fd)
        self.path = Path(name)
        self.file = h5py.File(self.path, "w", libver="latest", locking=False)
        np_dtype = np.uint16 if self.dtype == torch.bfloat16 else torch.empty(0, dtype=self.dtype).numpy().dtype
        self.ds = self.file.create_dataset("grads", shape=(num_batches, size), dtype=np_dtype)  # contiguous rows
        self.ds.attrs["dtype"] = str(self.dtype).removeprefix("torch.")
        self.error = None
        self._stop = False  # end() sets it; a store may be begun again
        self.free: queue.Queue | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=self.queue_depth)
        self.thread = threading.Thread(target=self._writer, name="gradlab-disk-store", daemon=True)
        self.thread.start()

    def put(self, k: int, grad: torch.Tensor) -> None:
        self._raise_if_failed()
        if self.free is None:  # depth + 1 reused buffers: fresh [P] allocations cost page faults
            self.free = queue.Queue()  # unbounded on purpose: holds at most depth + 1
            for _ in range(self.queue_depth + 1):
                self.free.put(torch.empty(self.size, dtype=self.dtype, device=grad.device))
        while True:
            try:
                buf = self.free.get(timeout=0.2)
                break
            except queue.Empty:
                self._raise_if_failed()
        buf.copy_(grad.detach())
        self._enqueue((k, buf))

    def chunks(self, max_bytes: int = 256 << 20) -> Iterator[tuple[int, torch.Tensor]]:
        self._finish_writes()
        rows = max(1, max_bytes // max(1, self.size * 4))
        for s in range(0, self.num_batches, rows):
            arr = self.ds[s:s + rows]
            t = torch.from_numpy(arr)
            yield s, (t.view(torch.bfloat16) if self.dtype == torch.bfloat16 else t)

    def end(self) -> None:
        try:
            if self.thread is not None and self.thread.is_alive():
                self._stop = True
                self._enqueue(None, check=False)
                self.thread.join()
        finally:
            self.thread = None
            if self.file is not None:
                self.file.close()
                self.file = None
            if self.path is not None:
                self.path.unlink(missing_ok=True)
                self.path = None

    def _enqueue(self, item, check: bool = True) -> None:
        while True:  # never block forever on a dead writer
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if check:
                    self._raise_if_failed()
                elif self.thread is None or not self.thread.is_alive():
                    return

    def _finish_writes(self) -> None:
        if self.thread is not None:
            self._enqueue(None)
            self.thread.join()
            self.thread = None
            self._raise_if_failed()
            self.file.flush()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            exc = self.error
            need = _gib(self.num_batches, self.size, self.dtype)
            raise GradlabError(
                f"track.grads = \"disk\": writing batch gradients to {self.path} failed ({type(exc).__name__}: {exc}); "
                f"free space there ({need:.1f} GiB per probe pass) or set track.scratch_dir to another disk"
            ) from exc

    # ------------------------------------------------------------------ writer thread
    _stop = False

    def _write_row(self, k: int, arr: np.ndarray) -> None:
        self.ds[k] = arr

    def _writer(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is None or self._stop:
                    return
                k, buf = item
                g = buf.cpu()
                arr = g.view(torch.uint16).numpy() if g.dtype == torch.bfloat16 else g.numpy()
                self._write_row(k, arr)
                self.bytes_written += arr.nbytes
                self.free.put(buf)
        except BaseException as exc:  # surfaces in the main thread via _raise_if_failed
            self.error = exc
            while True:  # free the queued gradients and unblock the producer
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    return


class RecomputeStore(GradStore):
    """O(P) memory: keeps nothing but |g_k|^2; ``chunks`` runs the probe pass again.

    ``probe_pass`` accumulates the full gradient in the first pass and gives the store a
    replay that recomputes g_k at the same theta_e, batch by batch, for the distance pass.
    Exact (a deterministic forward/backward gives the same gradient); costs one more probe
    pass per epoch (and one more per ``chunks`` call: ``keep_grads`` reads them again).
    The recomputed norms are checked against the first pass's.
    """

    name = "recompute"
    needs_replay = True
    tolerance = 1e-4  # relative |g_k| mismatch between the passes that gets a warning (nondeterministic kernels)

    def begin(self, num_batches: int, size: int, device: torch.device) -> None:
        self.num_batches = num_batches
        self.sq_norms = torch.zeros(num_batches, dtype=torch.float64, device=device)
        self.replay: Callable[[], Iterator[torch.Tensor]] | None = None

    def put(self, k: int, grad: torch.Tensor) -> None:
        self.sq_norms[k] = _sq_norm(grad)

    def set_replay(self, replay: Callable[[], Iterator[torch.Tensor]]) -> None:
        self.replay = replay

    def chunks(self, max_bytes: int = 256 << 20) -> Iterator[tuple[int, torch.Tensor]]:
        if self.replay is None:
            raise RuntimeError("the recompute store needs set_replay() before chunks(); use tracker.probe_pass")
        k = -1
        worst = 0.0
        for k, g in enumerate(self.replay()):
            if k >= self.num_batches:
                raise RuntimeError(f"recompute replay yielded more than {self.num_batches} gradients")
            g = g.to(self.dtype).float()  # same rounding as a memory store of this grad_dtype
            first = float(self.sq_norms[k])
            if first > 0:
                worst = max(worst, abs(float(_sq_norm(g)) / first - 1) / 2)
            yield k, g.unsqueeze(0)
        if k + 1 != self.num_batches:
            raise RuntimeError(f"recompute replay yielded {k + 1} gradients, expected {self.num_batches}")
        if worst > self.tolerance:
            warnings.warn(f"track.grads = \"recompute\": recomputed batch gradient norms differ by up to "
                          f"{worst:.1e} (relative) from the first probe pass; the kernels are not deterministic "
                          f"(torch.use_deterministic_algorithms(True) makes them so)", RuntimeWarning, stacklevel=2)

    def end(self) -> None:
        self.replay = None


class SketchStore(GradStore):
    """CountSketch of each g_k to ``sketch_dim`` dims plus its exact norm: O(K d) memory.

    D is estimated from the sketches and the exact norms of g_k and G (``gradlab.track.sketch``);
    the whole-model measures only (no per-layer distances). The sketches (float64
    ``[K, d]``) stay on ``self.sketches`` until ``end`` so the runner can keep them.
    """

    name = "sketch"
    exact = False
    _cache: dict = {}  # (size, dim, seed, device) -> CountSketch, built once per run

    def __init__(self, dtype: str = "float32", sketch_dim: int = 8192, sketch_seed: int = 0, **options):
        super().__init__(dtype)
        self.dim, self.seed = int(sketch_dim), int(sketch_seed)

    def begin(self, num_batches: int, size: int, device: torch.device) -> None:
        from gradlab.track.sketch import CountSketch

        key = (size, self.dim, self.seed, str(device))
        if key not in SketchStore._cache:
            SketchStore._cache.clear()  # one sketch alive at a time: it costs 5 bytes per parameter
            SketchStore._cache[key] = CountSketch(size, self.dim, device, self.seed)
        self.cs = SketchStore._cache[key]
        self.sketches = torch.zeros(num_batches, self.dim, dtype=torch.float64, device=device)
        self.sq_norms = torch.zeros(num_batches, dtype=torch.float64, device=device)

    def put(self, k: int, grad: torch.Tensor) -> None:
        g = grad.detach().to(self.dtype).float()  # same rounding as a memory store of this grad_dtype
        self.sketches[k] = self.cs(g)
        self.sq_norms[k] = _sq_norm(g)

    def reductions(self, full: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from gradlab.track.sketch import sketch_reductions

        return sketch_reductions(self.sketches, self.sq_norms.cpu().numpy(), self.cs(full),
                                 float(full.double().pow(2).sum()))

    def keeps(self, keep_grads: str, last_epoch: bool) -> bool:
        return keep_grads != "none"  # sketches are small: kept every epoch

    def kept(self) -> tuple[str, torch.Tensor]:
        """``("sketch", [K, d])``: appended every epoch as ``/probes/<o>/sketch [E, K, d]``."""
        return "sketch", self.sketches.float()

    def chunks(self, max_bytes: int = 256 << 20) -> Iterator[tuple[int, torch.Tensor]]:
        raise GradlabError("track.grads = \"sketch\" keeps no batch gradients; use an exact store "
                           "(memory | disk | recompute) to keep or read them")

    def end(self) -> None:
        self.cs = None


def make_store(name: str, dtype: str, **options) -> GradStore:
    """The store ``track.grads`` names; ``options`` (``scratch_dir``, ``sketch_dim``,
    ``sketch_seed``) go to the stores that use them and are ignored by the others."""
    return registry.STORES.load(name)(dtype, **options)
