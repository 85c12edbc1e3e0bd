"""Tasks: seeded streams with a regime shift, each checked against an independent computation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparse_rtrl.errors import ConfigurationError, InputError
from sparse_rtrl.tasks import TASKS, AbstractTask, Stream, describe, make_task
from sparse_rtrl.tasks.lorenz import lorenz_samples

NAMES = sorted(TASKS)
STEPS = 240


def fields(s: Stream):
    return (s.inputs, s.targets, s.error_mask, s.starts, *s.info.values())


def identical(x: torch.Tensor, y: torch.Tensor) -> bool:
    both_nan = x.isnan() & y.isnan() if x.is_floating_point() else torch.zeros_like(x, dtype=torch.bool)
    return x.shape == y.shape and x.dtype == y.dtype and bool(((x == y) | both_nan).all())


def same(a: Stream, b: Stream) -> bool:
    return set(a.info) == set(b.info) and all(identical(x, y) for x, y in zip(fields(a), fields(b)))


# -- the conformance suite every task passes ---------------------------------------------------
def test_registry_holds_the_paper_tasks():
    assert {"sine", "lorenz", "adding"} <= set(TASKS)
    for name, cls in TASKS.items():
        assert cls.name == name and issubclass(cls, AbstractTask)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["A", "B", "shift"])
def test_stream_shapes_dtypes_and_structure(name, kind):
    task = make_task(name)
    s = task.sample(kind, STEPS, 1) if kind != "shift" else task.sample_shift(100, STEPS - 100, 1)
    assert s.inputs.shape == (STEPS, task.input_size) and s.inputs.dtype == torch.float64
    assert s.targets.shape == (STEPS, task.output_size) and s.targets.dtype == torch.float64
    assert s.error_mask.shape == s.starts.shape == (STEPS,)
    assert s.error_mask.dtype == s.starts.dtype == torch.bool
    assert bool(s.starts[0]) and len(s) == STEPS
    assert torch.isfinite(s.inputs).all() and torch.isfinite(s.targets).all()
    want = {"A": [0] * STEPS, "B": [1] * STEPS, "shift": [0] * 100 + [1] * (STEPS - 100)}[kind]
    assert s.info["regime"].tolist() == want
    if task.continuous_error:
        assert s.error_mask.all() and s.starts.sum() == 1
    else:
        assert 0 < s.error_mask.sum() < STEPS


@pytest.mark.parametrize("name", NAMES)
def test_streams_reproducible_by_seed_and_independent_across_seeds_and_regimes(name):
    a = make_task(name).sample("A", STEPS, 7)
    torch.manual_seed(123)  # the global RNG plays no part...
    again = make_task(name).sample("A", STEPS, 7)
    assert same(a, again)
    before = torch.get_rng_state()
    make_task(name).sample_shift(50, 50, 7)
    assert torch.equal(torch.get_rng_state(), before)  # ...and is left alone
    assert same(make_task(name).sample_shift(60, 70, 7), make_task(name).sample_shift(60, 70, 7))
    assert not torch.equal(a.inputs, make_task(name).sample("A", STEPS, 8).inputs)
    assert not torch.equal(a.inputs, make_task(name).sample("B", STEPS, 7).inputs)


@pytest.mark.parametrize("name", NAMES)
def test_describe_reports_sizes_shift_and_options(name):
    task = make_task(name)
    d = describe(name)
    assert d == task.describe() == describe()[name]
    assert (d["input_size"], d["output_size"]) == (task.input_size, task.output_size)
    assert d["continuous_error"] is task.continuous_error
    assert "→" in d["shift"] or "change" in d["shift"]
    assert make_task(name, **d["options"]) == task  # options round-trip through make_task


@pytest.mark.parametrize("name", ["sine", "lorenz", "adding", "mimic"])
def test_regression_loss_is_mse(name):
    task = make_task(name)
    g = torch.Generator().manual_seed(0)
    p = torch.randn(5, task.output_size, generator=g, dtype=torch.float64)
    y = torch.randn(5, task.output_size, generator=g, dtype=torch.float64)
    want = np.mean([np.mean((p[i].numpy() - y[i].numpy()) ** 2) for i in range(5)])
    assert task.loss(p, y).item() == pytest.approx(want, rel=1e-12)
    assert task.loss(p[0], y[0]).item() == pytest.approx(np.mean((p[0].numpy() - y[0].numpy()) ** 2))
    with pytest.raises(InputError, match="shape"):
        task.loss(p, y[:, :1].expand(5, 2) if task.output_size == 1 else y[:, :1])


# -- sine -------------------------------------------------------------------------------------------
def fit_mixture(values: np.ndarray, t: np.ndarray, freqs) -> tuple[np.ndarray, np.ndarray]:
    """Least squares on sin/cos of known frequencies: (amplitudes, residual)."""
    X = np.concatenate([np.sin(2 * np.pi * np.outer(t, freqs)), np.cos(2 * np.pi * np.outer(t, freqs))], 1)
    coef, *_ = np.linalg.lstsq(X, values, rcond=None)
    n = len(freqs)
    return np.hypot(coef[:n], coef[n:]), values - X @ coef


@pytest.mark.parametrize("regime", ["A", "B"])
def test_sine_targets_equal_the_closed_form_mixture(regime):
    task = make_task("sine", noise_std=0.0, horizon=4)
    s = task.sample(regime, 600, 3)
    freqs = task.frequencies_a if regime == "A" else task.frequencies_b
    amps = task.amplitudes_a if regime == "A" else task.amplitudes_b
    t = np.arange(600 + 4)
    series = np.concatenate([s.inputs[:, 0].numpy(), s.targets[-4:, 0].numpy()])
    fitted, residual = fit_mixture(series, t, freqs)
    np.testing.assert_allclose(fitted, amps, atol=1e-10)
    assert np.abs(residual).max() < 1e-10
    np.testing.assert_allclose(s.targets[:, 0].numpy(), series[4:], atol=0)


def test_sine_target_is_the_future_noisy_observation():
    task = make_task("sine", horizon=3, noise_std=0.2)
    s = task.sample("A", 4000, 5)
    assert torch.equal(s.targets[:-3], s.inputs[3:])
    noise = (s.targets - s.info["clean"]).numpy()
    assert noise.std() == pytest.approx(0.2, rel=0.05) and abs(noise.mean()) < 0.02
    _, residual = fit_mixture(s.info["clean"][:, 0].numpy(), np.arange(3, 4003), task.frequencies_a)
    assert np.abs(residual).max() < 1e-10


def spectral_peaks(x: np.ndarray, count: int) -> list[float]:
    """Frequencies of the ``count`` largest local maxima of the Hann-windowed spectrum."""
    power = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x))
    local = [i for i in range(1, len(power) - 1) if power[i] >= power[i - 1] and power[i] >= power[i + 1]]
    local.sort(key=lambda i: -power[i])
    return [float(freqs[i]) for i in local[:count]]


def test_sine_spectrum_peak_moves_to_the_b_frequencies_after_the_shift():
    task = make_task("sine")
    T = 4096
    s = task.sample_shift(T, T, 11)
    x = s.inputs[:, 0].numpy()
    before, after = spectral_peaks(x[:T], 3), spectral_peaks(x[T:], 3)
    tol = 1.5 / T
    assert abs(before[0] - task.frequencies_a[0]) < tol  # the dominant (largest-amplitude) one
    assert abs(after[0] - task.frequencies_b[0]) < tol
    for peaks, freqs in ((before, task.frequencies_a), (after, task.frequencies_b)):
        assert all(min(abs(p - f) for p in peaks) < tol for f in freqs)


def test_sine_signal_is_continuous_across_the_shift_and_follows_b_after_it():
    task = make_task("sine", noise_std=0.0)
    s = task.sample_shift(300, 300, 2)
    x = s.inputs[:, 0].numpy()
    # one step of the mixture moves it by at most Σ a_i·2π·f_i (the largest slope)
    bound = sum(a * 2 * np.pi * f for a, f in zip(task.amplitudes_b, task.frequencies_b))
    assert abs(x[300] - x[299]) <= bound
    fitted, residual = fit_mixture(x[300:], np.arange(300), task.frequencies_b)
    np.testing.assert_allclose(fitted, task.amplitudes_b, atol=1e-10)
    assert np.abs(residual).max() < 1e-10


# -- lorenz -----------------------------------------------------------------------------------------
def lorenz_rhs(sigma, rho, beta):
    def f(_, s):
        x, y, z = s
        return [sigma * (y - x), x * (rho - z) - y, x * y - beta * z]

    return f


def test_lorenz_integrator_matches_solve_ivp_and_is_fourth_order():
    from scipy.integrate import solve_ivp

    s0 = [1.5, -2.0, 24.0]
    dt, steps = 0.02, 100  # two time units
    ref = solve_ivp(lorenz_rhs(10.0, 28.0, 8 / 3), (0, dt * steps), s0, method="DOP853",
                    rtol=1e-13, atol=1e-12, t_eval=dt * np.arange(1, steps + 1)).y.T
    err = {}
    for sub in (10, 20):
        ours = lorenz_samples(s0, steps, dt, sub, 10.0, 28.0, 8 / 3).numpy()
        err[sub] = np.abs(ours - ref).max()
    assert err[20] < 1e-7
    assert 12 < err[10] / err[20] < 24  # RK4: halving the step divides the error by ≈ 16


@pytest.mark.parametrize("kind", ["A", "B", "shift"])
def test_lorenz_stream_is_a_trajectory_of_the_regimes_system(kind):
    from scipy.integrate import solve_ivp

    task = make_task("lorenz", horizon=2)
    s = task.sample(kind, 60, 4) if kind != "shift" else task.sample_shift(30, 30, 4)
    assert torch.equal(s.targets[:-2], s.inputs[2:])
    mean, std = task.normalisation()
    raw = (s.inputs * std + mean).numpy()
    right, wrong = [], []
    for t in range(59):
        regime = "AB"[int(s.info["regime"][t + 1])]
        for r in "AB":
            flow = solve_ivp(lorenz_rhs(*task.parameters(r)), (0, task.dt), raw[t], method="DOP853",
                             rtol=1e-12, atol=1e-12).y[:, -1]
            (right if r == regime else wrong).append(np.abs(raw[t + 1] - flow).max())
    # the default RK4 step (0.005) errs by up to ~3e-5 per sample on states of size ~50;
    # the other regime's flow is off by far more
    assert max(right) < 1e-4
    assert np.median(wrong) > 1e-2


def test_lorenz_regime_a_is_normalised_and_regime_b_differs():
    task = make_task("lorenz")
    a = torch.cat([task.sample("A", 3000, seed).inputs for seed in range(4)]).numpy()
    b = torch.cat([task.sample("B", 3000, seed).inputs for seed in range(4)]).numpy()
    assert np.abs(a.mean(0)).max() < 0.1
    np.testing.assert_allclose(a.std(0), 1.0, atol=0.03)
    # ρ 28 → 35 lifts the attractor (its z mean sits ≈ 4.4 below ρ at both) and widens it
    mean, std = task.normalisation()
    z_shift = (35.0 - 28.0) / std[2].item()
    assert b[:, 2].mean() == pytest.approx(z_shift, abs=0.1)
    assert (b.std(0)[:2] > 1.08).all()


# -- adding ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("regime", ["A", "B"])
def test_adding_targets_are_the_weighted_marked_values(regime):
    task = make_task("adding", length=10)
    s = task.sample(regime, 10 * 30 + 4, 6)  # 30 sequences and a cut one
    w = task.weights_a if regime == "A" else task.weights_b
    x, y = s.inputs.numpy(), s.targets[:, 0].numpy()
    ends = np.flatnonzero(s.error_mask.numpy())
    np.testing.assert_array_equal(ends, 10 * np.arange(30) + 9)  # never on the cut sequence
    np.testing.assert_array_equal(np.flatnonzero(s.starts.numpy()), 10 * np.arange(31))
    for k in range(30):
        seq = x[10 * k : 10 * k + 10]
        marked = np.flatnonzero(seq[:, 1] == 1.0)
        assert len(marked) == 2 and marked[0] < 5 <= marked[1]
        assert set(np.unique(seq[:, 1])) <= {0.0, 1.0}
        assert y[10 * k + 9] == pytest.approx(w[0] * seq[marked[0], 0] + w[1] * seq[marked[1], 0], abs=1e-15)
    assert (y[~s.error_mask.numpy()] == 0).all()
    assert 0.0 <= x[:, 0].min() and x[:, 0].max() < 1.0


def test_adding_shift_starts_a_new_sequence_with_the_new_operation():
    task = make_task("adding", length=8, values_b=(-1.0, 1.0))
    s = task.sample_shift(20, 16, 0)  # the A part ends with a cut sequence (20 = 2·8 + 4)
    np.testing.assert_array_equal(np.flatnonzero(s.starts.numpy()), [0, 8, 16, 20, 28])
    np.testing.assert_array_equal(np.flatnonzero(s.error_mask.numpy()), [7, 15, 27, 35])
    x = s.inputs.numpy()
    for end in (27, 35):
        seq = x[end - 7 : end + 1]
        p, q = np.flatnonzero(seq[:, 1])
        assert s.targets[end, 0].item() == pytest.approx(seq[p, 0] - seq[q, 0], abs=1e-15)
    assert x[20:, 0].min() < 0 and x[:20, 0].min() >= 0


# -- Marschall et al.'s add and mimic tasks ---------------------------------------------------------
def test_marschall_add_probability_follows_the_lags_of_each_regime():
    task = make_task("marschall_add", deterministic=True)
    s = task.sample_shift(200, 200, 3)
    x = s.inputs[:, 0].numpy()
    assert np.array_equal(s.inputs[:, 1].numpy(), 1 - x)
    for t in range(13, 400):
        t1, t2 = task.lags_a if t < 200 else task.lags_b
        assert s.targets[t, 0].item() == 0.5 + 0.5 * x[t - t1] - 0.25 * x[t - t2]
    assert torch.equal(s.targets[:, 0], s.info["probability"])


def test_marschall_add_outcomes_have_the_stated_conditional_frequencies():
    task = make_task("marschall_add")
    s = task.sample("A", 16000, 9)
    x, y = s.inputs[:, 0].numpy(), s.targets[:, 0].numpy()
    assert set(np.unique(y)) == {0.0, 1.0} and np.array_equal(s.targets[:, 1].numpy(), 1 - y)
    t1, t2 = task.lags_a
    t = np.arange(t2, len(x))
    for a in (0, 1):
        for b in (0, 1):
            sel = t[(x[t - t1] == a) & (x[t - t2] == b)]
            p = 0.5 + 0.5 * a - 0.25 * b
            se = max(math.sqrt(p * (1 - p) / len(sel)), 1e-3)
            assert abs(y[sel].mean() - p) < 4 * se


def test_marschall_add_loss_is_soft_cross_entropy():
    task = make_task("marschall_add")
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 2, generator=g, dtype=torch.float64)
    target = torch.rand(6, 1, generator=g, dtype=torch.float64)
    target = torch.cat([target, 1 - target], 1)
    want = F.cross_entropy(logits, target)  # soft targets, mean over the batch
    assert task.loss(logits, target).item() == pytest.approx(want.item(), rel=1e-12)
    one = F.cross_entropy(logits[:1], target[:1])
    assert task.loss(logits[0], target[0]).item() == pytest.approx(one.item(), rel=1e-12)


def test_mimic_targets_are_the_teacher_rnn_outputs():
    task = make_task("mimic", n_inputs=3, n_outputs=2, teacher_hidden=7)
    s = task.sample_shift(40, 40, 0)
    outs, h = [], torch.zeros(1, 7, dtype=torch.float64)
    teachers = {r: task.teacher(r) for r in "AB"}
    cells = {r: torch.nn.RNNCell(3, 7, bias=False).double() for r in "AB"}
    for r in "AB":
        cells[r].load_state_dict({"weight_ih": teachers[r]["w_in"], "weight_hh": teachers[r]["w_rec"]})
    for t in range(80):
        w, cell = teachers["A" if t < 40 else "B"], cells["A" if t < 40 else "B"]
        with torch.no_grad():
            h = cell(s.inputs[t : t + 1], h)
        outs.append(h[0] @ w["w_out"].T)
    np.testing.assert_allclose(s.targets.numpy(), torch.stack(outs).numpy(), rtol=1e-12, atol=1e-12)
    assert set(s.inputs.unique().tolist()) == {0.0, 1.0}
    wa, wb = task.teacher("A")["w_rec"], task.teacher("B")["w_rec"]
    assert ((wb - wa).norm() / wa.norm()).item() == pytest.approx(task.perturbation, rel=0.3)


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, options, match",
    [
        ("nope", {}, r"unknown task 'nope': choose one of adding, bci, delayed_teacher, lag_shift, lorenz, marschall_add, mimic, sine"),
        ("sine", {"frequency": 0.1}, r"task 'sine' has no option\(s\) frequency; its options are: frequencies_a"),
        ("sine", {"frequencies_b": (0.1, 0.2)}, r"frequencies_b must have 3 entries"),
        ("sine", {"frequencies_a": (0.6, 0.1, 0.01)}, r"below 0.5 cycles per step \(the Nyquist"),
        ("sine", {"noise_std": -1}, r"noise_std must be ≥ 0"),
        ("sine", {"horizon": 0}, r"horizon must be an int ≥ 1"),
        ("lorenz", {"dt": 0.0}, r"dt must be > 0"),
        ("lorenz", {"rho_b": float("nan")}, r"rho_b must be finite"),
        ("adding", {"length": 1}, r"length must be an int ≥ 2"),
        ("adding", {"values_b": (1.0, 0.0)}, r"values_b must be \(lo, hi\) with lo < hi"),
        ("marschall_add", {"lags_a": (0, 3)}, r"lags_a must be two ints ≥ 1"),
        ("mimic", {"input_probability": 2.0}, r"input_probability must lie in \[0, 1\]"),
    ],
)
def test_bad_task_names_and_options_raise_helpful_errors(name, options, match):
    with pytest.raises(ConfigurationError, match=match):
        make_task(name, **options)


@pytest.mark.parametrize(
    "args, match",
    [
        (("C", 10, 0), r"regime must be 'A' \(pretraining\) or 'B' \(after the shift\), got 'C'"),
        (("A", 0, 0), r"steps must be an int ≥ 1, got 0"),
        (("A", 10, -1), r"seed must be an int ≥ 0, got -1"),
        (("A", 10, 1.5), r"seed must be an int ≥ 0, got 1.5"),
    ],
)
def test_bad_sample_arguments_raise(args, match):
    with pytest.raises(ConfigurationError, match=match):
        make_task("sine").sample(*args)


def test_options_from_a_config_file_are_normalised_and_hashable():
    task = make_task("sine", frequencies_a=[0.02, 0.05], frequencies_b=[0.03, 0.07],
                     amplitudes_a=[1, 0.5], amplitudes_b=[1, 0.5], horizon=np.int64(2))
    assert task.frequencies_a == (0.02, 0.05) and task.horizon == 2
    assert hash(task) == hash(make_task("sine", **task.options()))
