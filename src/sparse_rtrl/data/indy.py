"""Loader for the O'Doherty/Sabes reaching recordings ("Indy", "Loco"; MATLAB v7.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._h5 import dataset, open_hdf5, require_h5py
from .binning import bin_edges, bin_mean, check_bin_size, check_times, count_spikes, velocity_from_position
from .errors import DataError
from .session import Session

KIND = "O'Doherty/Sabes MATLAB v7.3 (.mat)"


def load_indy(path, bin_size: float, *, include_hash: bool = False, merge_units: bool = False) -> Session:
    """One session of Zenodo 583331 / 3854034, binned: y_{j,u} = #{spikes of u in bin j},
    v_j = mean over the 250 Hz samples t_i ∈ bin j of (dp/dt)(t_i).

    The file is MATLAB v7.3 (HDF5), read with h5py. MATLAB stores arrays column-major, so
    h5py shows every matrix transposed relative to the dataset's description:

    - ``chan_names`` (n × 1 cell in MATLAB): h5py ``(1, n)`` object references, each to a
      ``(L, 1)`` uint16 array of character codes ("M1 001");
    - ``spikes`` (n × u cell): h5py ``(u, n)`` references, row 0 the unsorted "hash" unit,
      rows 1… the sorted units; each points to spike times in seconds, or to a MATLAB empty
      array (attribute ``MATLAB_empty``) when that slot holds no unit;
    - ``t`` (k × 1): h5py ``(1, k)`` sample times (s) at 250 Hz, the clock of the spikes;
    - ``cursor_pos`` (k × 2): h5py ``(2, k)`` cursor position (mm);
    - ``target_pos`` (k × 2, optional): used only to number the reaches (``trial_id``).

    Velocity: finite differences of ``cursor_pos`` at the sample times (central inside,
    one-sided at the ends), then the mean over the samples of each bin; units mm/s. Bins
    start at t[0] and cover whole bins up to t[-1].

    Args:
        path: the ``.mat`` file, e.g. ``indy_20160407_02.mat``.
        bin_size: bin width Δ in seconds (e.g. 0.05).
        include_hash: keep unit row 0, the unsorted "hash" threshold crossings (default
            False: sorted units only, as most decoding studies of this dataset do).
        merge_units: one column per electrode channel, the sum of its (kept) units — the
            threshold-crossing counts a clinical BCI decodes. With ``include_hash=True`` this
            is every threshold crossing on the channel.

    Returns:
        a :class:`Session`. Columns are channel-major: channel 0's units 1…4 (or 0…4), then
        channel 1's, …; slots with no unit (MATLAB empty) are dropped unless
        ``merge_units``. Names are "<chan> u<k>" ("M1 001 u0" is the hash unit), or the
        channel name when ``merge_units``. ``trial_id`` counts target changes (reach index)
        when ``target_pos`` is present.

    Example::

        s = load_indy("data/indy_20160407_02.mat", 0.05, include_hash=True, merge_units=True)
        s.counts.shape      # (T, 96)
    """
    bin_size = check_bin_size(bin_size)
    path = Path(path)
    h5py = require_h5py()
    with open_hdf5(path, KIND) as f:
        t = check_times(_vector(dataset(f, "t", path, "sample times, (1, k) in h5py"), path, "t"), path, "t")
        k = t.size
        cursor = _series(dataset(f, "cursor_pos", path, "cursor position, (2, k) in h5py"), k, path, "cursor_pos")
        target = _series(f["target_pos"], k, path, "target_pos") if "target_pos" in f else None
        names = _chan_names(f, path, h5py)
        grid = _spike_grid(f, len(names), path)
        first_unit = 0 if include_hash else 1
        columns, times = [], []
        for c, chan in enumerate(names):
            chan_times = []
            for u in range(first_unit, grid.shape[0]):
                spikes = _spike_times(f, grid[u, c], path, f"spikes[{u}, {c}]", h5py)
                if spikes is None:
                    continue
                if merge_units:
                    chan_times.append(spikes)
                else:
                    columns.append(f"{chan} u{u}")
                    times.append(spikes)
            if merge_units:
                columns.append(chan)
                times.append(np.concatenate(chan_times) if chan_times else np.zeros(0))

    edges = bin_edges(t[0], t[-1], bin_size, path)
    velocity = bin_mean(velocity_from_position(cursor, t), t, edges)
    if not np.all(np.isfinite(velocity)):
        raise DataError(path, "some bins hold no finite cursor sample (a gap in 't' or NaN "
                              "in 'cursor_pos'); use a larger bin_size")
    trial_id = None
    if target is not None:
        # a reach starts where the target moves; a bin belongs to the reach of its first sample
        reach = np.concatenate([[0], np.cumsum(np.any(np.diff(target, axis=0) != 0, axis=1))])
        first = np.searchsorted(t, edges[:-1], side="left")
        trial_id = reach[np.minimum(first, k - 1)]
    return Session(counts=count_spikes(times, edges), velocity=velocity, bin_times=edges[:-1],
                   channel_names=tuple(columns), bin_size=bin_size, source=str(path),
                   trial_id=trial_id)


def _vector(ds, path, name: str) -> np.ndarray:
    a = ds[()]
    if a.ndim != 2 or min(a.shape) != 1:
        raise DataError(path, f"expected '{name}' of shape (1, k) as a MATLAB vector, got {a.shape}")
    return a.ravel()


def _series(ds, k: int, path, name: str) -> np.ndarray:
    """A MATLAB k × 2 matrix, shown by h5py as (2, k); returned as (k, 2)."""
    a = np.asarray(ds[()], dtype=np.float64)
    if a.shape == (2, k):
        return a.T
    if a.shape == (k, 2):  # written by a tool that does not transpose (e.g. hdf5storage)
        return a
    raise DataError(path, f"expected '{name}' of shape (2, {k}) (k = len(t)), got {a.shape}")


def _chan_names(f, path, h5py) -> list[str]:
    refs = dataset(f, "chan_names", path, "channel names, (1, n) references in h5py")[()]
    if refs.dtype != h5py.ref_dtype:
        raise DataError(path, f"'chan_names' should hold object references (a cell array), got dtype {refs.dtype}")
    names = []
    for i, ref in enumerate(refs.ravel()):
        if not ref:
            raise DataError(path, f"chan_names[{i}] is a null reference")
        codes = np.asarray(f[ref][()]).ravel()
        names.append("".join(chr(int(c)) for c in codes))
    return names


def _spike_grid(f, n: int, path) -> np.ndarray:
    """``spikes`` as a (unit, channel) grid of references."""
    grid = dataset(f, "spikes", path, "spike times, (u, n) references in h5py")[()]
    if grid.ndim != 2:
        raise DataError(path, f"expected 'spikes' of shape (u, {n}), got {grid.shape}")
    if grid.shape[1] != n and grid.shape[0] == n:  # a file written without MATLAB's transpose
        grid = grid.T
    if grid.shape[1] != n:
        raise DataError(path, f"expected 'spikes' of shape (u, {n}) (n = len(chan_names)), got {grid.shape}")
    return grid


def _spike_times(f, ref, path, where: str, h5py) -> np.ndarray | None:
    """Spike times behind one reference; None for an empty slot."""
    if not ref:
        return None
    ds = f[ref]
    # MATLAB writes an empty matrix as its dimensions (uint64 [0, 0]) flagged MATLAB_empty
    if ds.attrs.get("MATLAB_empty", 0) or ds.size == 0:
        return None
    a = ds[()]
    if not np.issubdtype(a.dtype, np.floating):
        if np.issubdtype(a.dtype, np.integer) and a.size == 2 and not np.any(a):
            return None  # an empty matrix whose MATLAB_empty flag was lost
        raise DataError(path, f"{where} should hold spike times (float), got dtype {a.dtype}")
    return a.ravel().astype(np.float64)
