"""Where one probe pass's batch gradients wait until the epoch's full gradient is known.

D[e, k] needs every batch gradient and their mean, and the mean is only known after the
last batch. A store receives the K flat gradients of one pass (``put``) and hands them
back in order, in row chunks (``chunks``), for the distance pass. Stores register in
``STORES`` under the name ``track.grads`` uses.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .errors import ConfigError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class GradStore:
    """Interface: ``begin`` -> ``put`` x K -> ``chunks`` (any number of times) -> ``end``."""

    name = ""

    def __init__(self, dtype: str = "float32"):
        self.dtype = DTYPES[dtype]

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


class MemoryStore(GradStore):
    """All K gradients in one ``[K, P]`` tensor on the compute device, in ``grad_dtype``."""

    name = "memory"

    def begin(self, num_batches: int, size: int, device: torch.device) -> None:
        try:
            self.grads = torch.empty(num_batches, size, dtype=self.dtype, device=device)
        except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            gb = num_batches * size * torch.finfo(self.dtype).bits / 8 / 2**30
            raise ConfigError(
                f"track.grads = \"memory\" needs {gb:.1f} GiB for {num_batches} batch gradients of "
                f"{size:,} parameters and could not get it ({type(exc).__name__}); use "
                f"track.grad_dtype = \"bfloat16\" to halve it, or another track.grads store"
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


STORES: dict[str, type[GradStore]] = {s.name: s for s in (MemoryStore,)}


def make_store(name: str, dtype: str) -> GradStore:
    if name not in STORES:
        raise ConfigError(f'unknown track.grads "{name}"; choose one of {", ".join(STORES)}')
    return STORES[name](dtype)
