"""Opening HDF5 files (MATLAB v7.3, NWB 2) with h5py, turning failures into DataError."""

from __future__ import annotations

import contextlib
from pathlib import Path

from .errors import DataError


def require_h5py():
    try:
        import h5py
    except ImportError as exc:  # the data extra is optional
        raise ImportError("reading HDF5 recordings needs h5py: pip install 'sparse_rtrl[data]'") from exc
    return h5py


@contextlib.contextmanager
def open_hdf5(path, kind: str):
    """``h5py.File(path, 'r')``; a missing, non-HDF5 or truncated file raises DataError."""
    h5py = require_h5py()
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"no such file (expected a {kind} file)")
    if not h5py.is_hdf5(path):
        raise DataError(path, f"not an HDF5 file, so not a {kind} file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:  # truncated or corrupt: h5py reports it as OSError
        raise DataError(path, f"cannot open as {kind} (truncated or corrupt?): {exc}") from exc
    try:
        yield f
    except OSError as exc:  # a dataset past the end of a truncated file
        raise DataError(path, f"cannot read {kind} (truncated or corrupt?): {exc}") from exc
    finally:
        f.close()


def dataset(f, key: str, path, what: str):
    """``f[key]`` as a dataset, or DataError naming the missing key."""
    h5py = require_h5py()
    if key not in f:
        raise DataError(path, f"missing key '{key}' ({what})")
    node = f[key]
    if not isinstance(node, h5py.Dataset):
        raise DataError(path, f"'{key}' should be a dataset ({what}), found a group")
    return node
