"""Data for the BCI task: loaders against independent binning of files written here in each
real layout, the shared real recordings (skipped when absent), the drifting-population
generator's statistics, and simulated drift on real counts."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sparse_rtrl.errors import ConfigurationError, InputError
from sparse_rtrl.data import (
    DataError,
    DriftingPopulation,
    RecordingDrift,
    Session,
    load_binned,
    load_indy,
    load_nwb,
    min_jerk,
    reach_trajectory,
    simulate_drift,
)

h5py = pytest.importorskip("h5py")
scipy_io = pytest.importorskip("scipy.io")
stats = pytest.importorskip("scipy.stats")

from shared_data import shared_file  # noqa: E402 (after the importorskips)


def histogram_counts(spike_lists, edges):
    """Independent binning: numpy.histogram per unit, (T, U)."""
    return np.stack([np.histogram(s, bins=edges)[0] for s in spike_lists], axis=1)


def loop_bin_mean(values, times, edges):
    """Independent bin means: a boolean mask per bin, NaN where no finite sample."""
    out = np.full((len(edges) - 1, values.shape[1]), np.nan)
    for j in range(len(edges) - 1):
        m = (times >= edges[j]) & (times < edges[j + 1])
        for d in range(values.shape[1]):
            v = values[m, d]
            v = v[np.isfinite(v)]
            if v.size:
                out[j, d] = v.mean()
    return out


@contextlib.contextmanager
def one_thread():
    """Least squares on one thread: on a shared, loaded machine, BLAS threads that spin
    waiting for each other make a 6000 × 100 solve a hundred times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def with_intercept(session):
    return torch.cat([session.counts.double(), torch.ones(session.n_bins, 1, dtype=torch.float64)], dim=1)


def lstsq_decoder(session):
    """Least-squares linear decoder v ≈ [y, 1]·W fitted on one session, (C + 1, 2)."""
    with one_thread():
        return torch.linalg.lstsq(with_intercept(session), session.velocity).solution


def decoder_error(W, session):
    """Normalised mean squared error (1 − R² of the fit): 0 perfect, 1 no better than the mean."""
    with one_thread():
        v = session.velocity
        return float(((with_intercept(session) @ W - v) ** 2).sum() / ((v - v.mean(0)) ** 2).sum())


# ---------------------------------------------------------------------------- Session

def test_session_normalises_types_and_names_the_problem():
    s = Session(counts=np.array([[1, 2], [0, 3]], dtype=np.uint8), velocity=[[0.5, 1.0], [2.0, 3.0]],
                bin_times=[0.0, 0.1], channel_names=["a", "b"], bin_size=0.1, source="x")
    assert s.counts.dtype == torch.int64 and s.velocity.dtype == torch.float64
    assert s.channel_names == ("a", "b") and (s.n_bins, s.n_channels) == (2, 2)
    err = DataError("f.mat", "missing key 'x'")
    assert isinstance(err, InputError) and str(err) == "f.mat: missing key 'x'"
    assert str(pickle.loads(pickle.dumps(err))) == str(err)  # survives worker processes
    ok = dict(velocity=np.zeros((2, 2)), bin_times=[0, 1], channel_names=["a"], bin_size=1.0, source="src")
    with pytest.raises(DataError, match="src: counts must be non-negative"):
        Session(counts=[[-1], [0]], **ok)
    with pytest.raises(DataError, match="whole numbers"):
        Session(counts=[[0.5], [0.0]], **ok)
    with pytest.raises(DataError, match=r"velocity must be \(T, 2\) = \(3, 2\)"):
        Session(counts=[[0], [1], [2]], **ok)
    with pytest.raises(DataError, match="1 channel names for 2 count columns"):
        Session(counts=[[0, 1], [1, 1]], **ok)


def test_session_take_and_finite_select_bins():
    v = np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 2.0]])
    s = Session(counts=[[1], [2], [3]], velocity=v, bin_times=[0.0, 0.5, 1.0], channel_names=["u"],
                bin_size=0.5, source="x", trial_id=[0, 0, 1])
    f = s.finite()
    assert f.counts.ravel().tolist() == [1, 3] and f.bin_times.tolist() == [0.0, 1.0]
    assert f.trial_id.tolist() == [0, 1]
    assert s.take(slice(1, 3)).counts.ravel().tolist() == [2, 3]


# ---------------------------------------------------------------------------- Indy (v7.3)

def write_indy(path, *, t, cursor, names, grid, target=None, transpose_grid=False, skip=()):
    """An O'Doherty/Sabes file as MATLAB v7.3 writes it: everything transposed, cell arrays as
    object references into '#refs#', chars as uint16 codes, empty cells as MATLAB_empty."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = iter(range(10**6))

        def put(array, matlab_class, empty=False):
            ds = refs.create_dataset(f"r{next(counter)}", data=array)
            ds.attrs["MATLAB_class"] = np.bytes_(matlab_class)
            if empty:
                ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds.ref

        if "chan_names" not in skip:
            cn = f.create_dataset("chan_names", (1, len(names)), dtype=h5py.ref_dtype)
            for i, name in enumerate(names):  # a 1 × L char row is (L, 1) in h5py
                cn[0, i] = put(np.array([[ord(ch)] for ch in name], dtype=np.uint16), "char")
        if "spikes" not in skip:
            u, n = len(grid), len(names)
            shape = (n, u) if transpose_grid else (u, n)
            sp = f.create_dataset("spikes", shape, dtype=h5py.ref_dtype)
            for a in range(u):
                for c in range(n):
                    times = grid[a][c]
                    if times is None:  # an empty cell: its dimensions, flagged
                        ref = put(np.array([0, 0], dtype=np.uint64), "double", empty=True)
                    else:  # an m × 1 column is (1, m) in h5py
                        ref = put(np.asarray(times, dtype=np.float64)[None, :], "double")
                    sp[(c, a) if transpose_grid else (a, c)] = ref
        if "t" not in skip:
            f.create_dataset("t", data=t[None, :])
        if "cursor_pos" not in skip:
            f.create_dataset("cursor_pos", data=cursor)
        if target is not None:
            f.create_dataset("target_pos", data=target)
    with open(path, "r+b") as fh:  # the MATLAB text header lives in the userblock
        fh.write(b"MATLAB 7.3 MAT-file, written by a test".ljust(116))


@pytest.fixture
def indy_case(tmp_path):
    rng = np.random.default_rng(3)
    t = 1234.5 + np.arange(2500) * 0.004  # 10 s at 250 Hz, clock not starting at 0
    w = 2 * np.pi * 0.4
    cursor = np.stack([40 * np.sin(w * t), 25 * np.cos(1.3 * w * t)])  # (2, k) as h5py shows it
    names = ["M1 001", "M1 002", "M1 003"]
    # 3 unit rows (hash, sorted 1, sorted 2); None = empty cell
    grid = [[np.sort(rng.uniform(t[0] - 1, t[-1] + 1, rng.integers(50, 200))) for _ in names],
            [np.sort(rng.uniform(t[0], t[-1], 120)), None, np.sort(rng.uniform(t[0], t[-1], 80))],
            [None, np.sort(rng.uniform(t[0], t[-1], 60)), None]]
    target = np.zeros((2, t.size))
    target[:, 700:] = 1.0
    target[0, 1900:] = -3.0
    path = tmp_path / "indy_test.mat"
    write_indy(path, t=t, cursor=cursor, names=names, grid=grid, target=target)
    return dict(path=path, t=t, cursor=cursor, names=names, grid=grid, w=w)


@pytest.mark.parametrize("include_hash", [False, True])
def test_indy_counts_match_histogram_of_each_unit(indy_case, include_hash):
    c = indy_case
    s = load_indy(c["path"], 0.05, include_hash=include_hash)
    edges = c["t"][0] + 0.05 * np.arange(s.n_bins + 1)
    assert s.n_bins == int((c["t"][-1] - c["t"][0]) / 0.05 + 1e-9) == 199
    rows = range(0 if include_hash else 1, 3)
    units = [(a, ch) for ch in range(3) for a in rows if c["grid"][a][ch] is not None]
    assert s.channel_names == tuple(f"{c['names'][ch]} u{a}" for a, ch in units)
    expected = histogram_counts([c["grid"][a][ch] for a, ch in units], edges)
    np.testing.assert_array_equal(s.counts.numpy(), expected)
    np.testing.assert_allclose(s.bin_times.numpy(), edges[:-1])
    assert s.source == str(c["path"]) and s.bin_size == 0.05


def test_indy_merge_units_sums_each_channel(indy_case):
    c = indy_case
    s = load_indy(c["path"], 0.1, include_hash=True, merge_units=True)
    edges = c["t"][0] + 0.1 * np.arange(s.n_bins + 1)
    per_channel = [np.concatenate([c["grid"][a][ch] for a in range(3) if c["grid"][a][ch] is not None])
                   for ch in range(3)]
    assert s.channel_names == tuple(c["names"])
    np.testing.assert_array_equal(s.counts.numpy(), histogram_counts(per_channel, edges))


def test_indy_velocity_is_the_bin_mean_of_the_cursor_derivative(indy_case):
    c = indy_case
    s = load_indy(c["path"], 0.05)
    edges = c["t"][0] + 0.05 * np.arange(s.n_bins + 1)
    w = c["w"]
    # independent: the exact mean velocity of the analytic cursor over each bin
    p = np.stack([40 * np.sin(w * edges), 25 * np.cos(1.3 * w * edges)], axis=1)
    exact = np.diff(p, axis=0) / 0.05
    peak = np.abs(exact).max()
    # samples average the derivative at 12–13 points per bin, not the integral: O(dt·|a|) off
    np.testing.assert_allclose(s.velocity.numpy(), exact, atol=0.01 * peak)
    assert np.abs(s.velocity.numpy() - exact).mean() < 0.003 * peak


def test_indy_trial_id_counts_target_changes(indy_case):
    c = indy_case
    s = load_indy(c["path"], 0.2)
    first_sample = np.searchsorted(c["t"], s.bin_times.numpy())
    expected = (first_sample >= 700).astype(int) + (first_sample >= 1900)
    np.testing.assert_array_equal(s.trial_id.numpy(), expected)


def test_indy_reads_an_untransposed_spike_grid(indy_case, tmp_path):
    c = indy_case
    # (a square grid would be ambiguous; real files have u ≤ 5 unit rows and n ≥ 96 channels)
    grid = c["grid"][:2]
    paths = tmp_path / "matlab.mat", tmp_path / "untransposed.mat"
    write_indy(paths[0], t=c["t"], cursor=c["cursor"], names=c["names"], grid=grid)
    write_indy(paths[1], t=c["t"], cursor=c["cursor"].T, names=c["names"], grid=grid, transpose_grid=True)
    a, b = load_indy(paths[0], 0.05), load_indy(paths[1], 0.05)
    assert a.n_channels == 2
    assert torch.equal(a.counts, b.counts) and torch.equal(a.velocity, b.velocity)


def test_indy_errors_name_the_file_and_the_problem(indy_case, tmp_path):
    c = indy_case
    with pytest.raises(DataError, match="no such file"):
        load_indy(tmp_path / "absent.mat", 0.05)
    v5 = tmp_path / "v5.mat"
    scipy_io.savemat(v5, {"t": c["t"]})
    with pytest.raises(DataError, match=r"v5\.mat: not an HDF5 file"):
        load_indy(v5, 0.05)
    truncated = tmp_path / "truncated.mat"
    truncated.write_bytes(c["path"].read_bytes()[:3000])
    with pytest.raises(DataError, match="truncated"):
        load_indy(truncated, 0.05)
    for key in ("cursor_pos", "spikes", "chan_names", "t"):
        path = tmp_path / f"no_{key}.mat"
        write_indy(path, t=c["t"], cursor=c["cursor"], names=c["names"], grid=c["grid"], skip=(key,))
        with pytest.raises(DataError, match=f"no_{key}.mat: missing key '{key}'"):
            load_indy(path, 0.05)
    bad = tmp_path / "bad_cursor.mat"
    write_indy(bad, t=c["t"], cursor=np.zeros((3, c["t"].size)), names=c["names"], grid=c["grid"])
    with pytest.raises(DataError, match=r"expected 'cursor_pos' of shape \(2, 2500\).*got \(3, 2500\)"):
        load_indy(bad, 0.05)
    with pytest.raises(DataError, match="shorter than one bin"):
        load_indy(c["path"], 60.0)
    with pytest.raises(ConfigurationError, match="bin_size must be a positive"):
        load_indy(c["path"], 0.0)


# ---------------------------------------------------------------------------- NWB

def write_nwb(path, *, units, series, trials=None, ids=None):
    """An NWB 2 file as pynwb lays it out: a ragged units table, TimeSeries groups under
    processing/behavior (directly or inside a Position container), optional trials."""
    with h5py.File(path, "w") as f:
        f.attrs["nwb_version"] = "2.5.0"
        u = f.create_group("units")
        u.attrs["neurodata_type"] = "Units"
        u.create_dataset("id", data=np.arange(len(units)) if ids is None else ids)
        u.create_dataset("spike_times", data=np.concatenate(units))
        u.create_dataset("spike_times_index", data=np.cumsum([len(x) for x in units]).astype(np.uint32))
        beh = f.create_group("processing/behavior")
        for name, (data, timing, attrs) in series.items():
            g = beh.create_group(name)
            d = g.create_dataset("data", data=data)
            for k, v in attrs.items():
                d.attrs[k] = v
            if "rate" in timing:
                st = g.create_dataset("starting_time", data=timing["start"])
                st.attrs["rate"] = timing["rate"]
            else:
                g.create_dataset("timestamps", data=timing["timestamps"])
        if trials is not None:
            f.create_dataset("intervals/trials/start_time", data=trials[0])
            f.create_dataset("intervals/trials/stop_time", data=trials[1])


@pytest.fixture
def nwb_units():
    rng = np.random.default_rng(5)
    return [np.sort(rng.uniform(-0.5, 6.5, n)) for n in (300, 40, 0, 500)]


def test_nwb_counts_velocity_and_trials(tmp_path, nwb_units):
    rng = np.random.default_rng(6)
    ts = 0.2 + np.arange(5000) * 0.001  # 1 kHz behaviour, as NLB stores it
    vel = rng.standard_normal((5000, 2)) * 100
    vel[1005:1305] = np.nan  # an inter-trial gap, 1.205–1.504 s: 14 whole bins
    pos = np.cumsum(vel, axis=0)  # a second series the loader must not prefer
    path = tmp_path / "maze.nwb"
    write_nwb(path, units=nwb_units, ids=[7, 8, 9, 11],
              series={"hand_pos": (pos, {"timestamps": ts}, {}),
                      "hand_vel": (vel, {"timestamps": ts}, {"conversion": 0.5})},
              trials=([0.2, 2.0, 4.0], [1.5, 3.0, 5.0]))
    s = load_nwb(path, 0.02)
    edges = ts[0] + 0.02 * np.arange(s.n_bins + 1)
    assert s.n_bins == 249 and s.channel_names == ("unit 7", "unit 8", "unit 9", "unit 11")
    np.testing.assert_array_equal(s.counts.numpy(), histogram_counts(nwb_units, edges))
    expected = loop_bin_mean(0.5 * vel, ts, edges)
    np.testing.assert_allclose(s.velocity.numpy(), expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    gap = ~np.isfinite(expected).all(1)
    assert gap.sum() == 14 and s.finite().n_bins == s.n_bins - 14
    start = edges[:-1]
    trial = np.where((start >= 0.2) & (start < 1.5), 0,
                     np.where((start >= 2.0) & (start < 3.0), 1, np.where((start >= 4.0) & (start < 5.0), 2, -1)))
    np.testing.assert_array_equal(s.trial_id.numpy(), trial)


def test_nwb_differentiates_a_position_with_rate_timing(tmp_path, nwb_units):
    w = 2 * np.pi * 0.5
    t = 0.1 + np.arange(6000) / 1000.0
    pos = np.stack([30 * np.sin(w * t), 20 * np.sin(2 * w * t), np.zeros_like(t)], axis=1)
    path = tmp_path / "rtt.nwb"
    write_nwb(path, units=nwb_units, series={"Position/cursor_pos": (pos, {"start": 0.1, "rate": 1000.0}, {})})
    s = load_nwb(path, 0.05)
    edges = 0.1 + 0.05 * np.arange(s.n_bins + 1)
    p = np.stack([30 * np.sin(w * edges), 20 * np.sin(2 * w * edges)], axis=1)
    exact = np.diff(p, axis=0) / 0.05
    np.testing.assert_allclose(s.velocity.numpy(), exact, atol=0.01 * np.abs(exact).max())
    np.testing.assert_array_equal(s.counts.numpy(), histogram_counts(nwb_units, edges))
    # the same series chosen by name
    assert torch.equal(load_nwb(path, 0.05, behavior="cursor_pos").velocity, s.velocity)


def test_nwb_errors_name_the_file_and_the_problem(tmp_path, nwb_units):
    ts = np.arange(100) * 0.01
    good = {"eye_pos": (np.zeros((100, 2)), {"timestamps": ts}, {})}
    path = tmp_path / "eye.nwb"
    write_nwb(path, units=nwb_units, series=good)
    with pytest.raises(DataError, match="eye.nwb: no velocity or position series.*available: eye_pos"):
        load_nwb(path, 0.05)
    with pytest.raises(DataError, match="no behaviour series 'hand_vel'.*available: eye_pos"):
        load_nwb(path, 0.05, behavior="hand_vel")
    with h5py.File(path, "a") as f:
        del f["units/spike_times_index"]
    with pytest.raises(DataError, match="missing key 'units/spike_times_index'"):
        load_nwb(path, 0.05, behavior="eye_pos")
    with h5py.File(path, "a") as f:
        f["units/spike_times_index"] = np.array([3, 2, 900])
    with pytest.raises(DataError, match="spike_times_index must be non-decreasing and end at"):
        load_nwb(path, 0.05, behavior="eye_pos")
    flat = tmp_path / "flat.nwb"
    write_nwb(flat, units=nwb_units, series={"hand_vel": (np.zeros(100), {"timestamps": ts}, {})})
    with pytest.raises(DataError, match=r"expected 'processing/behavior/hand_vel/data' of shape \(k, 2\)"):
        load_nwb(flat, 0.05)
    with pytest.raises(DataError, match="no such file"):
        load_nwb(tmp_path / "absent.nwb", 0.05)


def test_nwb_file_written_by_pynwb(tmp_path, nwb_units):
    """The loader reads what the reference NWB library writes (runs where pynwb is installed)."""
    pynwb = pytest.importorskip("pynwb")
    import datetime

    nwb = pynwb.NWBFile(session_description="test", identifier="test",
                        session_start_time=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
    for spikes in nwb_units:
        nwb.add_unit(spike_times=spikes)
    nwb.add_trial(start_time=0.0, stop_time=3.0)
    beh = nwb.create_processing_module("behavior", "behaviour")
    ts = np.arange(6000) / 1000.0
    vel = np.stack([np.sin(ts), np.cos(ts)], axis=1)
    beh.add(pynwb.TimeSeries(name="finger_vel", data=vel, timestamps=ts, unit="mm/s"))
    path = tmp_path / "pynwb.nwb"
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    s = load_nwb(path, 0.1)
    edges = 0.1 * np.arange(s.n_bins + 1)
    np.testing.assert_array_equal(s.counts.numpy(), histogram_counts(nwb_units, edges))
    np.testing.assert_allclose(s.velocity.numpy(), loop_bin_mean(vel, ts, edges), rtol=1e-12)
    assert s.trial_id.tolist() == [0] * 30 + [-1] * (s.n_bins - 30)


# ---------------------------------------------------------------------------- binned files

def test_binned_npz_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    counts = rng.poisson(2.0, (40, 5)).astype(np.int16)
    vel = rng.standard_normal((40, 2)).astype(np.float32)
    trial = np.repeat(np.arange(4), 10).astype(np.int16)
    path = tmp_path / "day.npz"
    np.savez(path, counts=counts, vel=vel, trial_id=trial, bin_s=np.float32(0.1))
    s = load_binned(path)
    np.testing.assert_array_equal(s.counts.numpy(), counts)
    np.testing.assert_array_equal(s.velocity.numpy(), vel.astype(np.float64))
    np.testing.assert_array_equal(s.trial_id.numpy(), trial)
    assert s.bin_size == pytest.approx(0.1) and s.channel_names[4] == "unit 4"
    np.testing.assert_allclose(s.bin_times.numpy(), np.arange(40) * 0.1, rtol=1e-6)

    np.savez(tmp_path / "nobin.npz", counts=counts, vel=vel)
    with pytest.raises(DataError, match="nobin.npz: missing key 'bin_s'.*pass bin_size="):
        load_binned(tmp_path / "nobin.npz")
    assert load_binned(tmp_path / "nobin.npz", bin_size=0.02).bin_size == 0.02
    np.savez(tmp_path / "novel.npz", counts=counts, bin_s=0.1)
    with pytest.raises(DataError, match="missing key 'vel'.*keys present: counts, bin_s"):
        load_binned(tmp_path / "novel.npz")
    np.savez(tmp_path / "short.npz", counts=counts, vel=vel[:30], bin_s=0.1)
    with pytest.raises(DataError, match=r"expected 'vel' of shape \(40, 2\).*got \(30, 2\)"):
        load_binned(tmp_path / "short.npz")
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.npz: cannot read as .npz"):
        load_binned(tmp_path / "cut.npz")
    np.savez(tmp_path / "frac.npz", counts=counts + 0.5, vel=vel, bin_s=0.1)
    with pytest.raises(DataError, match="whole numbers"):
        load_binned(tmp_path / "frac.npz")


def test_binned_matlab_v5_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(2)
    T = 300
    spikes = rng.poisson(1.5, (7, T)).astype(np.uint8)
    vel = np.vstack([rng.standard_normal((2, T)), np.zeros((1, T))])
    time = 12.591 + 0.05 * np.arange(T) + rng.uniform(-4e-4, 4e-4, T)  # ±0.5 ms jitter as stored
    path = tmp_path / "m1.mat"
    scipy_io.savemat(path, {"spikes": spikes, "handVel": vel, "time": time[None, :], "handPos": vel})
    s = load_binned(path)
    np.testing.assert_array_equal(s.counts.numpy(), spikes.T)
    np.testing.assert_array_equal(s.velocity.numpy(), vel[:2].T)
    np.testing.assert_array_equal(s.bin_times.numpy(), time)
    assert s.bin_size == pytest.approx(0.05, abs=1e-3) and s.trial_id is None

    scipy_io.savemat(tmp_path / "bad.mat", {"spikes": spikes, "handVel": vel[:, :-1], "time": time[None, :]})
    with pytest.raises(DataError, match=r"bad.mat: expected 'handVel' of shape \(3, 300\)"):
        load_binned(tmp_path / "bad.mat")
    scipy_io.savemat(tmp_path / "nospk.mat", {"handVel": vel, "time": time[None, :]})
    with pytest.raises(DataError, match="missing key 'spikes'"):
        load_binned(tmp_path / "nospk.mat")
    gap = time.copy()
    gap[150:] += 1.0
    scipy_io.savemat(tmp_path / "gap.mat", {"spikes": spikes, "handVel": vel, "time": gap[None, :]})
    with pytest.raises(DataError, match="not evenly spaced"):
        load_binned(tmp_path / "gap.mat")
    (tmp_path / "cut.mat").write_bytes(path.read_bytes()[:400])
    with pytest.raises(DataError, match="cut.mat: cannot read as MATLAB v5"):
        load_binned(tmp_path / "cut.mat")
    with h5py.File(tmp_path / "v73.mat", "w") as f:
        f["spikes"] = spikes
    with pytest.raises(DataError, match="MATLAB v7.3.*use load_indy"):
        load_binned(tmp_path / "v73.mat")
    with pytest.raises(DataError, match="unknown suffix"):
        (tmp_path / "x.csv").write_text("1")
        load_binned(tmp_path / "x.csv")


# ---------------------------------------------------------------------------- real recordings

@pytest.mark.parametrize("name, shape", [
    ("chewie_2013-10-03_bin100ms_moving.npz", (895, 174)),
    ("chewie_2013-12-19_bin100ms_moving.npz", (835, 155)),
    ("chewie_2013-10-03_bin100ms.npz", (1640, 174)),
])
def test_real_chewie_sessions(name, shape):
    path = shared_file(name)
    s = load_binned(path)
    raw = np.load(path)
    assert tuple(s.counts.shape) == shape and s.bin_size == pytest.approx(0.1)
    np.testing.assert_array_equal(s.counts.numpy(), raw["counts"])
    np.testing.assert_array_equal(s.velocity.numpy(), raw["vel"].astype(np.float64))
    np.testing.assert_array_equal(s.trial_id.numpy(), raw["trial_id"])
    # rates_hz = counts / bin, an independent column of the same file
    np.testing.assert_allclose(s.counts.numpy() / 0.1, raw["rates_hz"], rtol=1e-5)


def test_real_stevenson_session():
    path = shared_file("stevenson2011_m1.mat")
    s = load_binned(path)
    assert tuple(s.counts.shape) == (15536, 171) and tuple(s.velocity.shape) == (15536, 2)
    assert s.bin_size == pytest.approx(0.05, abs=1e-4)
    assert 12.5 < float(s.bin_times[0]) < 12.7 and 788 < float(s.bin_times[-1]) < 790
    raw = scipy_io.loadmat(path)
    assert int(s.counts.sum()) == int(raw["spikes"].astype(np.int64).sum())
    assert np.all(raw["handVel"][2] == 0)  # the README's third row, dropped


def test_simulated_drift_on_the_stevenson_recording_degrades_a_fixed_decoder():
    s = load_binned(shared_file("stevenson2011_m1.mat"))
    split = int(0.6 * s.n_bins)
    train, test = s.take(slice(0, split)), s.take(slice(split, None))
    W = lstsq_decoder(train)
    unchanged = simulate_drift(test, 0.0, seed=0)
    assert torch.equal(unchanged.counts, test.counts)
    assert unchanged.source.startswith("simulated drift (d=0, seed=0) of ") and str(s.source) in unchanged.source
    errors = [np.mean([decoder_error(W, simulate_drift(test, d, seed)) for seed in range(2)])
              for d in (0.0, 0.5, 1.0)]
    assert all(a < b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] > 2 * errors[0], errors


# ---------------------------------------------------------------------------- generator

def test_min_jerk_profile_and_reaches_stay_in_the_workspace():
    tau = np.linspace(0, 1, 2001)
    s = min_jerk(tau)
    speed = np.gradient(s, tau)
    assert s[0] == 0 and s[-1] == pytest.approx(1.0)
    assert tau[np.argmax(speed)] == pytest.approx(0.5, abs=1e-3) and speed.max() == pytest.approx(1.875, rel=1e-4)
    np.testing.assert_allclose(speed, speed[::-1], atol=1e-6)  # bell: symmetric
    v, reach = reach_trajectory(4000, 0.01, np.random.default_rng(0), workspace=10.0,
                                reach_duration=(0.5, 1.0), hold_duration=(0.1, 0.3))
    p = np.cumsum(v, axis=0) * 0.01  # position from the velocity, starting at the centre
    assert np.linalg.norm(p, axis=1).max() <= 10.0 + 1e-9
    assert np.all(np.diff(reach) >= 0) and 25 <= reach[-1] <= 60  # 40 s of 0.6–1.3 s reaches


def test_generator_is_reproducible_by_seed_and_counts_are_nonnegative_integers():
    cfg = DriftingPopulation(duration=30.0)
    a, b = cfg.sessions(2, seed=4), cfg.sessions(2, seed=4)
    c = cfg.sessions(2, seed=5)
    for x, y in zip(a, b):
        assert torch.equal(x.counts, y.counts) and torch.equal(x.velocity, y.velocity)
    assert not torch.equal(a[1].counts, c[1].counts)
    for s in a:
        assert s.counts.dtype == torch.int64 and int(s.counts.min()) >= 0
        assert tuple(s.counts.shape) == (600, 96) and s.channel_names[0] == "ch000"
        assert "synthetic" in s.source and s.trial_id is not None
    # more sessions, or another drift, leave the shared streams (reaches) as they were
    assert torch.equal(cfg.sessions(3, seed=4)[1].counts, a[1].counts)
    assert torch.equal(dataclasses.replace(cfg, drift=0.9).sessions(2, seed=4)[1].velocity, a[1].velocity)
    with pytest.raises(ConfigurationError, match=r"drift must lie in \[0, 1\]"):
        DriftingPopulation(drift=1.5)
    with pytest.raises(ConfigurationError, match="seed must be a non-negative int"):
        cfg.sessions(1, seed=None)


def block_estimates(s, n_blocks):
    """Per-block least-squares tuning y_c ≈ a_c + b_c·v, stacked ``(n_blocks, 3, C)``."""
    y = s.counts.double().reshape(n_blocks, -1, s.n_channels)
    X = torch.cat([torch.ones(s.n_bins, 1, dtype=torch.float64), s.velocity], dim=1).reshape(n_blocks, -1, 3)
    with one_thread():
        return torch.linalg.lstsq(X, y).solution.numpy()


def session_difference_pvalue(a, b, n_blocks=30):
    """Two-sample test that two sessions share per-channel mean rates and tuning.

    Block means and block-fitted tuning coefficients are nearly independent across 30 s
    blocks (reaches last about a second), so their spread gives standard errors that respect
    the serial correlation of counts. Each difference / s.e. is Student-t with 2(n − 1)
    degrees of freedom under equal laws (Welch, equal block counts). Channels share one
    velocity trajectory, so their statistics are correlated: the family is tested by its
    largest |t| with a Bonferroni bound, valid under any dependence.
    """
    t = []
    for stat in (lambda s: s.counts.double().numpy().reshape(n_blocks, -1, s.n_channels).mean(1)[:, None],
                 lambda s: block_estimates(s, n_blocks)):
        ea, eb = stat(a), stat(b)
        se = np.sqrt(ea.var(0, ddof=1) / n_blocks + eb.var(0, ddof=1) / n_blocks)
        t.append(((ea.mean(0) - eb.mean(0)) / se).ravel())
    t = np.concatenate(t)
    p_each = 2 * stats.t.sf(np.abs(t), df=2 * (n_blocks - 1))
    return min(1.0, t.size * p_each.min()), t


def test_zero_drift_gives_statistically_identical_sessions():
    cfg = DriftingPopulation(drift=0.0, duration=900.0, within_session_drift=0.0)
    t0, t1 = cfg.tunings(2, seed=0)
    for field in ("direction", "depth", "baseline", "gain", "unit"):
        assert torch.equal(getattr(t0, field), getattr(t1, field))
    a, b = cfg.sessions(2, seed=0)
    p, t = session_difference_pvalue(a, b)
    assert p > 0.01, (p, np.abs(t).max())
    # the same test has power: it rejects at a modest drift
    a, b = dataclasses.replace(cfg, drift=0.3).sessions(2, seed=0)
    p_drift, _ = session_difference_pvalue(a, b)
    assert p_drift < 1e-6, p_drift


def test_unit_turnover_follows_the_drift_probabilities():
    d, cfg = 0.6, DriftingPopulation(drift=0.6, n_channels=400, occupancy=0.8, turnover=0.5, appearance=0.25)
    tunings = cfg.tunings(6, seed=2)
    kept, occupied, appeared = 0, 0, 0
    for before, after in zip(tunings, tunings[1:]):
        had = before.occupied
        same = after.unit == before.unit
        kept += int((same & had).sum())
        occupied += int(had.sum())
        appeared += int((after.unit > before.unit.max()).sum())
    n = 5 * 400
    # a unit survives when neither lost (d·turnover) nor replaced (d·appearance)
    p_keep = (1 - d * 0.5) * (1 - d * 0.25)
    assert abs(kept / occupied - p_keep) < 4 * np.sqrt(p_keep * (1 - p_keep) / occupied)
    p_new = d * 0.25
    assert abs(appeared / n - p_new) < 4 * np.sqrt(p_new * (1 - p_new) / n)


def test_decoder_error_across_sessions_grows_with_drift():
    errors = []
    for d in (0.0, 0.3, 0.6, 1.0):
        cfg = DriftingPopulation(drift=d, duration=200.0)
        per_seed = []
        for seed in range(3):
            a, b = cfg.sessions(2, seed=seed)
            per_seed.append(decoder_error(lstsq_decoder(a), b))
        errors.append(np.mean(per_seed))
    assert all(x < y for x, y in zip(errors, errors[1:])), errors
    assert errors[0] < 0.3 and errors[-1] > 2 * errors[0], errors


def test_overdispersion_gives_gamma_poisson_variance():
    # untuned, no drift: every bin of a channel has the same mean μ = (ν + b)·Δ
    base = DriftingPopulation(duration=600.0, depth=(0.0, 0.0), baseline_rate=(20.0, 20.0),
                              within_session_drift=0.0, occupancy=1.0, n_channels=20)
    mu = (2.0 + 20.0) * 0.05
    for alpha in (0.0, 0.5):
        (s,) = dataclasses.replace(base, dispersion=alpha).sessions(1, seed=1)
        y = s.counts.double().numpy()
        np.testing.assert_allclose(y.mean(0).mean(), mu, rtol=0.02)
        fano = (y.var(0, ddof=1) / y.mean(0)).mean()
        assert fano == pytest.approx(1 + alpha * mu, rel=0.03)


def test_within_session_drift_changes_rates_over_time():
    base = DriftingPopulation(duration=600.0, depth=(0.0, 0.0), baseline_rate=(40.0, 40.0),
                              occupancy=1.0, n_channels=120, noise_rate=0.0)

    def log_ratio(sigma):
        (s,) = dataclasses.replace(base, within_session_drift=sigma).sessions(1, seed=3)
        y = s.counts.double().numpy()
        first, second = y[: s.n_bins // 2].sum(0), y[s.n_bins // 2:].sum(0)
        return np.log(second / first), 1 / first + 1 / second

    lr, poisson_var = log_ratio(0.0)  # no drift: only Poisson noise, Var ≈ 1/N₁ + 1/N₂
    assert lr.var() == pytest.approx(poisson_var.mean(), rel=0.5)
    lr_drift, _ = log_ratio(0.3)
    assert lr_drift.var() > 20 * lr.var()


# ---------------------------------------------------------------------------- simulated drift

@pytest.fixture(scope="module")
def synthetic_real():
    (s,) = DriftingPopulation(duration=300.0, drift=0.0).sessions(1, seed=9)
    return dataclasses.replace(s, source="recording.mat")


def test_recording_drift_zero_is_identity_and_labelled(synthetic_real):
    s = synthetic_real
    out = simulate_drift(s, 0.0, seed=1)
    assert torch.equal(out.counts, s.counts) and torch.equal(out.velocity, s.velocity)
    assert out.source == "simulated drift (d=0, seed=1) of recording.mat"
    again = simulate_drift(s, 0.7, seed=1)
    assert torch.equal(again.counts, simulate_drift(s, 0.7, seed=1).counts)
    assert again.counts.dtype == torch.int64 and int(again.counts.min()) >= 0
    with pytest.raises(ConfigurationError, match="turnover must lie in"):
        RecordingDrift(turnover=2.0)


def test_recording_drift_gain_has_the_requested_spread(synthetic_real):
    s = synthetic_real
    out = RecordingDrift(drift=1.0, turnover=0.0, appearance=0.0, gain_drift=0.4, baseline_drift=0.0).apply(s, seed=3)
    ratio = np.log(out.counts.double().numpy().sum(0) / s.counts.double().numpy().sum(0))
    # log g ~ N(0, 0.4²) per channel; counts of 5 min add little sampling noise
    assert 0.4 * 0.75 < ratio.std() < 0.4 * 1.25 and abs(ratio.mean()) < 3 * 0.4 / np.sqrt(96)


def test_recording_drift_loss_leaves_untuned_noise(synthetic_real):
    s = synthetic_real
    out = RecordingDrift(drift=1.0, turnover=1.0, appearance=0.0, gain_drift=0.0, baseline_drift=0.0,
                         noise_rate=4.0).apply(s, seed=0)
    y = out.counts.double().numpy()
    np.testing.assert_allclose(y.mean(), 4.0 * s.bin_size, rtol=0.03)
    r = np.corrcoef(np.c_[y, s.velocity.numpy()].T)[:-2, -2:]
    assert np.abs(r).max() < 4.5 / np.sqrt(s.n_bins)  # no channel carries velocity any more


def test_recording_drift_new_units_are_tuned_mixtures(synthetic_real):
    s = synthetic_real
    out = RecordingDrift(drift=1.0, turnover=0.0, appearance=1.0, gain_drift=0.0, baseline_drift=0.0).apply(s, seed=0)
    y, x = out.counts.double().numpy(), s.counts.double().numpy()
    # each new channel is half of two other channels: its mean is one of the pairwise averages
    pair_means = (x.mean(0)[:, None] + x.mean(0)[None, :]) / 2
    for c in range(0, 96, 12):
        assert np.min(np.abs(pair_means - y[:, c].mean())) < 4 * np.sqrt(y[:, c].mean() / s.n_bins)
    # still decodable (real tuning), but not by the old decoder
    assert decoder_error(lstsq_decoder(out), out) < 0.5
    assert decoder_error(lstsq_decoder(s), out) > 2 * decoder_error(lstsq_decoder(s), s)


def test_recording_drift_within_session_makes_rates_wander(synthetic_real):
    s = synthetic_real

    def half_log_ratio(y):
        first, second = y[: len(y) // 2].sum(0), y[len(y) // 2:].sum(0)
        return np.log((second + 1) / (first + 1))

    x = s.counts.double().numpy()
    y = RecordingDrift(drift=0.0, within_session_drift=0.5).apply(s, seed=0).counts.double().numpy()
    # σ_w = 0.5 per √minute over 5 min moves log rates by ~0.5·√(5/3) between halves
    assert half_log_ratio(y).std() > 3 * half_log_ratio(x).std()
    np.testing.assert_allclose(half_log_ratio(y).std(), 0.5 * np.sqrt(5 / 3), rtol=0.35)
