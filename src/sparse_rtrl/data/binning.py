"""Turning spike times and sampled behaviour into bins, shared by the file loaders.

Bins are e_j = t₀ + j·Δ, j = 0…T, and bin j is the half-open interval [e_j, e_{j+1}):
a spike exactly on an edge belongs to the later bin, and only whole bins inside the
recording are kept, T = ⌊(t_end − t₀)/Δ⌋.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigurationError
from .errors import DataError

# tolerance on (t_end − t₀)/Δ so a recording of exactly T·Δ seconds gives T bins, not T − 1
_EDGE_SLACK = 1e-9


def check_bin_size(bin_size) -> float:
    b = float(bin_size)
    if not (np.isfinite(b) and b > 0):
        raise ConfigurationError(f"bin_size must be a positive number of seconds, got {bin_size!r}")
    return b


def bin_edges(start: float, stop: float, bin_size: float, path) -> np.ndarray:
    """Edges e_0 … e_T of the whole bins of width Δ that fit in [start, stop]."""
    n = int(np.floor((stop - start) / bin_size + _EDGE_SLACK))
    if n < 1:
        raise DataError(path, f"recording spans {stop - start:.6g} s, shorter than one "
                              f"bin of {bin_size:g} s; use a smaller bin_size")
    # multiply rather than accumulate, so edge j carries one rounding error, not j of them
    return start + bin_size * np.arange(n + 1, dtype=np.float64)


def count_spikes(spike_times: list[np.ndarray], edges: np.ndarray) -> np.ndarray:
    """``(T, U)`` int64 counts: entry (j, u) = #{spikes s of unit u : e_j ≤ s < e_{j+1}}."""
    T = len(edges) - 1
    out = np.zeros((T, len(spike_times)), dtype=np.int64)
    for u, times in enumerate(spike_times):
        times = np.asarray(times, dtype=np.float64).ravel()
        j = np.searchsorted(edges, times, side="right") - 1
        j = j[(j >= 0) & (j < T)]
        out[:, u] = np.bincount(j, minlength=T)
    return out


def bin_mean(values: np.ndarray, times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(T, D)`` mean of the finite samples whose time lies in each bin; NaN where none do."""
    T = len(edges) - 1
    values = np.asarray(values, dtype=np.float64)
    j = np.searchsorted(edges, times, side="right") - 1
    inside = (j >= 0) & (j < T)
    out = np.full((T, values.shape[1]), np.nan)
    for d in range(values.shape[1]):
        ok = inside & np.isfinite(values[:, d])
        total = np.bincount(j[ok], weights=values[ok, d], minlength=T)
        n = np.bincount(j[ok], minlength=T)
        np.divide(total, n, out=out[:, d], where=n > 0)
    return out


def check_times(times: np.ndarray, path, name: str) -> np.ndarray:
    """Sample times as a finite, strictly increasing float64 vector."""
    times = np.asarray(times, dtype=np.float64).ravel()
    if times.size < 2:
        raise DataError(path, f"'{name}' needs at least 2 samples, got {times.size}")
    if not np.all(np.isfinite(times)):
        raise DataError(path, f"'{name}' contains NaN or inf")
    if not np.all(np.diff(times) > 0):
        raise DataError(path, f"'{name}' must be strictly increasing")
    return times


def velocity_from_position(position: np.ndarray, times: np.ndarray) -> np.ndarray:
    """v(t_i) by finite differences of p at the sample times.

    Central differences (second order, also for uneven spacing) inside, one-sided at the two
    ends: ``numpy.gradient(p, t, axis=0)``. Averaging these over a bin approximates the bin's
    displacement divided by Δ.
    """
    return np.gradient(np.asarray(position, dtype=np.float64), times, axis=0)
