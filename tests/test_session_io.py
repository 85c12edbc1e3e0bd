"""Session.save → load_binned round trip, Session.rebin against a plain loop, and the check
that refuses firing rates (Hz) stored as if they were spike counts."""

import numpy as np
import pytest
import scipy.io
import torch

from sparse_rtrl.data import DataError, DriftingPopulation, Session, load_binned, simulate_drift
from sparse_rtrl.data.plausibility import MIN_NONZERO

from shared_data import shared_file


def session(T=60, C=4, seed=0, bin_size=0.05, trial=True):
    rng = np.random.default_rng(seed)
    return Session(counts=rng.poisson(1.5, size=(T, C)), velocity=rng.normal(size=(T, 2)),
                   bin_times=10.0 + bin_size * np.arange(T), channel_names=[f"u{c}" for c in range(C)],
                   bin_size=bin_size, source="by hand",
                   trial_id=np.arange(T) // 5 if trial else None)


def assert_same_recording(a: Session, b: Session):
    assert torch.equal(a.counts, b.counts) and a.counts.dtype == b.counts.dtype == torch.int64
    assert torch.equal(a.velocity, b.velocity) and torch.equal(a.bin_times, b.bin_times)
    assert a.bin_size == b.bin_size and a.channel_names == b.channel_names
    assert (a.trial_id is None) == (b.trial_id is None)
    if a.trial_id is not None:
        assert torch.equal(a.trial_id, b.trial_id)
    assert a.simulated == b.simulated


@pytest.mark.parametrize("trial", [True, False])
def test_save_then_load_gives_the_same_session(tmp_path, trial):
    s = session(trial=trial)
    back = load_binned(s.save(tmp_path / "s.npz"))
    assert_same_recording(s, back)
    assert back.source == f"{tmp_path / 's.npz'} (saved from: by hand)"
    assert not list(tmp_path.glob("*.partial*"))  # written beside, then renamed


def test_a_saved_drifted_session_stays_simulated(tmp_path):
    drifted = simulate_drift(session(T=200, C=6), 0.5, seed=1)
    assert drifted.simulated and not session().simulated
    back = load_binned(drifted.save(tmp_path / "drifted.npz"))
    assert_same_recording(drifted, back)
    assert back.simulated and "simulated drift (d=0.5, seed=1)" in back.source
    synthetic = DriftingPopulation(n_channels=5).sessions(1, seed=0)[0]
    assert synthetic.simulated and load_binned(synthetic.save(tmp_path / "syn.npz")).simulated


def test_save_refuses_another_suffix(tmp_path):
    with pytest.raises(DataError, match=r"ending in \.npz"):
        session().save(tmp_path / "s.mat")


def test_rebin_sums_counts_and_averages_velocity_like_a_loop():
    s = session(T=23, C=3)
    wide = s.rebin(4)
    T = 23 // 4
    counts = np.array([[s.counts[4 * j:4 * j + 4, c].sum().item() for c in range(3)] for j in range(T)])
    vel = np.array([[s.velocity[4 * j:4 * j + 4, d].mean().item() for d in range(2)] for j in range(T)])
    assert wide.counts.tolist() == counts.tolist()
    np.testing.assert_allclose(wide.velocity.numpy(), vel, rtol=1e-15)
    assert wide.bin_times.tolist() == [s.bin_times[4 * j].item() for j in range(T)]
    assert wide.trial_id.tolist() == [s.trial_id[4 * j].item() for j in range(T)]
    assert wide.bin_size == pytest.approx(0.2) and wide.n_bins == 5
    assert torch.equal(s.rebin(1).counts, s.counts)
    gappy = s.take(torch.tensor([0, 1, 2, 5, 6, 7]))
    with pytest.raises(DataError, match="not contiguous"):
        gappy.rebin(2)
    with pytest.raises(DataError, match="positive int"):
        s.rebin(0)


# -- firing rates stored as counts ----------------------------------------------------------------
def write(path, values, bin_s):
    T = values.shape[0]
    np.savez(path, counts=values, vel=np.zeros((T, 2)), bin_s=np.float64(bin_s))
    return path


def test_whole_number_rates_in_hz_are_refused_with_the_fix(tmp_path):
    counts = np.minimum(session(T=200, C=5).counts.numpy(), 2)
    assert (counts * 20).max() <= 0.05 * 1000  # ≤ 40 Hz: the refractory bound alone cannot catch them
    with pytest.raises(DataError, match=r"multiple of 20 \(= 1/Δ for Δ = 0\.05 s: they look like firing "
                                        r"rates in Hz\).*rates_hz × bin_s"):
        load_binned(write(tmp_path / "hz.npz", counts * 20, 0.05))
    with pytest.raises(DataError, match="multiple of 3 .*scaled by a constant.*divide them by 3"):
        load_binned(write(tmp_path / "x3.npz", counts * 3, 0.05))
    # MATLAB v5 layout too, and floats that are whole numbers
    mat = tmp_path / "hz.mat"
    scipy.io.savemat(mat, {"spikes": (counts * 20.0).T, "handVel": np.zeros((3, 200)),
                           "time": (0.05 * np.arange(200))[None]})
    with pytest.raises(DataError, match="firing rates in Hz"):
        load_binned(mat)
    # the counts themselves pass, and so do a few counts that share a factor by chance
    assert torch.equal(load_binned(write(tmp_path / "ok.npz", counts, 0.05)).counts, torch.as_tensor(counts))
    few = np.zeros((40, 1), dtype=np.int64)
    few[: MIN_NONZERO - 1] = 2
    assert load_binned(write(tmp_path / "few.npz", few, 0.05)).counts.sum() == 2 * (MIN_NONZERO - 1)


def test_more_than_one_spike_per_millisecond_is_refused(tmp_path):
    y = np.ones((50, 2), dtype=np.int64)
    y[7, 1] = 101  # 101 spikes in 0.1 s: 1010 Hz
    with pytest.raises(DataError, match=r"101 'spikes'.*0\.1 s bin \(at most 100\).*firing rates in Hz"):
        load_binned(write(tmp_path / "fast.npz", y, 0.1))
    y[7, 1] = 100  # the bound itself is allowed
    assert load_binned(write(tmp_path / "edge.npz", y, 0.1)).counts.max() == 100


def test_the_real_chewie_rates_hz_are_refused_as_counts(tmp_path):
    """The Chewie files store both: counts pass, their rates_hz (= counts / 0.1 s) do not."""
    path = shared_file("chewie_2013-10-03_bin100ms_moving.npz")
    with np.load(path) as z:
        real = {k: z[k] for k in z.files}
    assert load_binned(path).counts.max() <= 100
    fake = tmp_path / "rates_as_counts.npz"
    np.savez(fake, **{**real, "counts": real["rates_hz"]})
    with pytest.raises(DataError, match="firing rates in Hz"):
        load_binned(fake)


def test_bin_size_cannot_relabel_a_width_the_file_stores(tmp_path):
    counts = session(T=50, C=3).counts.numpy()
    path = write(tmp_path / "s.npz", counts, 0.1)
    with pytest.raises(DataError, match=r"bins are 0\.1 s wide but bin_size=0\.05 was given.*rebin"):
        load_binned(path, bin_size=0.05)  # used to relabel silently: every rate off by 2
    assert load_binned(path, bin_size=0.1).bin_size == 0.1
    mat = tmp_path / "s.mat"
    scipy.io.savemat(mat, {"spikes": counts.T, "handVel": np.zeros((3, 50)), "time": (0.05 * np.arange(50))[None]})
    with pytest.raises(DataError, match=r"bins are 0\.05 s wide but bin_size=0\.1"):
        load_binned(mat, bin_size=0.1)
    assert load_binned(mat, bin_size=0.0501).bin_size == 0.0501  # within the 5 % step tolerance


def test_fine_bins_of_a_multi_unit_channel_and_jittered_clocks_are_accepted(tmp_path):
    """Three 30 Hz units on one channel in 1 ms bins hold up to 3 spikes a bin: counts, not
    rates; and a recording whose bin times jitter by 0.5 ms (as Stevenson's) can be rebinned."""
    import torch

    from sparse_rtrl.data import Session
    from sparse_rtrl.data.plausibility import check_counts_per_bin

    rng = np.random.default_rng(0)
    counts = rng.poisson(3 * 30 * 1e-3, size=(20_000, 2))
    counts[5, 0] = 3
    check_counts_per_bin(counts, 1e-3, "multi-unit")  # no error
    T = 40
    times = torch.arange(T, dtype=torch.float64) * 0.05 + torch.tensor([0.0, 5e-4] * (T // 2), dtype=torch.float64)
    s = Session(counts=torch.ones(T, 3, dtype=torch.int64), velocity=torch.zeros(T, 2, dtype=torch.float64),
                bin_times=times, channel_names=("a", "b", "c"), bin_size=0.05, source="jittered")
    wide = s.rebin(2)
    assert wide.n_bins == T // 2 and int(wide.counts[0, 0]) == 2
