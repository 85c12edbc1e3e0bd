"""Loader for Neural Latents Benchmark / DANDI NWB 2 files, with h5py alone (no pynwb)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._h5 import dataset, open_hdf5, require_h5py
from .binning import bin_edges, bin_mean, check_bin_size, check_times, count_spikes, velocity_from_position
from .errors import DataError
from .session import Session

KIND = "NWB 2 (HDF5)"

# behaviour series tried in this order when the caller names none: velocity first
VELOCITY_NAMES = ("hand_vel", "finger_vel", "cursor_vel")
POSITION_NAMES = ("hand_pos", "cursor_pos", "finger_pos")


def load_nwb(path, bin_size: float, *, behavior: str | None = None) -> Session:
    """One NWB 2 session binned: y_{j,u} = #{spikes of u in bin j}, v_j = mean of the
    velocity samples in bin j (or of dp/dt by finite differences when only a position is
    stored).

    Layout read (as DANDI 000128 MC_Maze, 000129 MC_RTT, 000138–140 write it):

    - ``units/spike_times`` (all units' spike times, concatenated, s) and
      ``units/spike_times_index`` (ragged index: unit u owns entries
      ``index[u-1]:index[u]``, with ``index[-1] = 0``); ``units/id`` names the units;
    - behaviour: a TimeSeries group under ``processing/behavior`` (directly, or one level
      down inside a container such as ``Position``) with ``data`` (k, D ≥ 2; the first two
      columns are x, y) and either ``timestamps`` (k,) or ``starting_time`` with attribute
      ``rate``; ``data``'s ``conversion`` (and ``offset``) attributes are applied;
    - ``intervals/trials`` (optional) ``start_time``/``stop_time``: gives ``trial_id``.

    Bins start at the first behaviour sample and cover whole bins up to the last. Spikes
    outside that span are not counted. Bins with no finite behaviour sample (NLB files
    have gaps between trials) get NaN velocity; ``session.finite()`` drops them.

    Args:
        path: the ``.nwb`` file.
        bin_size: bin width Δ in seconds (NLB uses 0.005 or 0.02).
        behavior: the TimeSeries to use, by name ("hand_vel") or path under
            ``processing/behavior`` ("Position/cursor_pos"); a name containing "vel" is used
            as velocity, one containing "pos" is differentiated. Default: the first present
            of hand_vel, finger_vel, cursor_vel, then hand_pos, cursor_pos, finger_pos.

    Returns:
        a :class:`Session` with one column per unit, named "unit <id>", and ``trial_id``
        the index of the trial containing each bin's start (−1 between trials).

    Example::

        s = load_nwb("sub-Jenkins/sub-Jenkins_ses-full_desc-train_behavior+ecephys.nwb", 0.02)
        s = s.finite()      # MC_Maze: keep the bins with hand velocity
    """
    bin_size = check_bin_size(bin_size)
    path = Path(path)
    h5py = require_h5py()
    with open_hdf5(path, KIND) as f:
        spike_times, names = _units(f, path)
        name, group = _find_behavior(f, behavior, path, h5py)
        values, times = _timeseries(group, name, path, h5py)
        trials = _trials(f, path)
    edges = bin_edges(times[0], times[-1], bin_size, path)
    if "vel" in name.rsplit("/", 1)[-1]:
        velocity = bin_mean(values, times, edges)
    else:
        velocity = bin_mean(velocity_from_position(values, times), times, edges)
    trial_id = None
    if trials is not None:
        starts, stops = trials
        i = np.searchsorted(starts, edges[:-1], side="right") - 1
        inside = (i >= 0) & (edges[:-1] < stops[np.maximum(i, 0)])
        trial_id = np.where(inside, i, -1)
    return Session(counts=count_spikes(spike_times, edges), velocity=velocity, bin_times=edges[:-1],
                   channel_names=names, bin_size=bin_size, source=str(path), trial_id=trial_id)


def _units(f, path):
    times = dataset(f, "units/spike_times", path, "the units table's spike times")[()].astype(np.float64)
    index = dataset(f, "units/spike_times_index", path, "ragged index into units/spike_times")[()]
    index = np.asarray(index, dtype=np.int64).ravel()
    if index.size == 0 or np.any(np.diff(index) < 0) or index[0] < 0 or index[-1] != times.size:
        raise DataError(path, "units/spike_times_index must be non-decreasing and end at "
                              f"len(units/spike_times) = {times.size}; got {index.size} entries "
                              f"ending at {index[-1] if index.size else 'nothing'}")
    starts = np.concatenate([[0], index[:-1]])
    per_unit = [times[a:b] for a, b in zip(starts, index)]
    ids = f["units/id"][()] if "units/id" in f else np.arange(index.size)
    if len(ids) != index.size:
        raise DataError(path, f"units/id has {len(ids)} entries for {index.size} units")
    return per_unit, tuple(f"unit {int(i)}" for i in ids)


def _find_behavior(f, behavior, path, h5py):
    """(name relative to processing/behavior, group) of the chosen TimeSeries."""
    if "processing/behavior" not in f:
        raise DataError(path, "missing group 'processing/behavior' (no behaviour to decode)")
    found = {}
    for key, node in f["processing/behavior"].items():
        if isinstance(node, h5py.Group) and "data" in node:
            found[key] = node
        elif isinstance(node, h5py.Group):  # a container (Position, BehavioralTimeSeries…)
            for sub, child in node.items():
                if isinstance(child, h5py.Group) and "data" in child:
                    found[f"{key}/{sub}"] = child
    by_name = {}
    for key in found:
        by_name.setdefault(key.rsplit("/", 1)[-1], key)
    available = ", ".join(sorted(found)) or "none"
    if behavior is not None:
        key = behavior if behavior in found else by_name.get(behavior)
        if key is None:
            raise DataError(path, f"no behaviour series '{behavior}' under processing/behavior; available: {available}")
        leaf = key.rsplit("/", 1)[-1]
        if "vel" not in leaf and "pos" not in leaf:
            raise DataError(path, f"cannot tell whether '{behavior}' is a velocity or a position: "
                                  "its name contains neither 'vel' nor 'pos'")
        return key, found[key]
    for name in VELOCITY_NAMES + POSITION_NAMES:
        if name in by_name:
            return by_name[name], found[by_name[name]]
    raise DataError(path, f"no velocity or position series ({', '.join(VELOCITY_NAMES + POSITION_NAMES)}) "
                          f"under processing/behavior; available: {available}; pass behavior=")


def _timeseries(group, name, path, h5py):
    """(values (k, 2), times (k,)) of a TimeSeries group, with conversion applied."""
    where = f"processing/behavior/{name}"
    data_ds = group["data"]
    values = np.asarray(data_ds[()], dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise DataError(path, f"expected '{where}/data' of shape (k, 2) or (k, D ≥ 2), got {values.shape}")
    values = values[:, :2] * float(data_ds.attrs.get("conversion", 1.0)) + float(data_ds.attrs.get("offset", 0.0))
    k = values.shape[0]
    if "timestamps" in group:
        times = group["timestamps"][()]
        if np.shape(times) != (k,):
            raise DataError(path, f"expected '{where}/timestamps' of shape ({k},), got {np.shape(times)}")
    elif "starting_time" in group:
        rate = group["starting_time"].attrs.get("rate")
        if rate is None or not float(rate) > 0:
            raise DataError(path, f"'{where}/starting_time' lacks a positive 'rate' attribute")
        times = float(group["starting_time"][()]) + np.arange(k) / float(rate)
    else:
        raise DataError(path, f"'{where}' has neither 'timestamps' nor 'starting_time'")
    return values, check_times(times, path, f"{where}/timestamps")


def _trials(f, path):
    if "intervals/trials/start_time" not in f or "intervals/trials/stop_time" not in f:
        return None
    starts = np.asarray(f["intervals/trials/start_time"][()], dtype=np.float64)
    stops = np.asarray(f["intervals/trials/stop_time"][()], dtype=np.float64)
    if starts.shape != stops.shape or np.any(np.diff(starts) < 0):
        raise DataError(path, "intervals/trials start_time/stop_time must have equal length and sorted starts")
    return starts, stops
