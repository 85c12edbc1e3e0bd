"""Tasks of the transport-dependent regime (SPEC §4b): the shift adds a term that only
temporal credit d steps back can learn.

Each construction claim is checked against an independent computation: the targets against
the inputs indexed by hand, the frozen model's post-shift loss against the new term's
variance in closed form, and "the frozen state does not hold the new term" by the best
linear readout (least squares) of a network pretrained on regime A, beside a positive
control (the A term it was trained on) and a negative control (lag 1, which it does hold).
"""

import numpy as np
import pytest
import torch

from sparse_rtrl.errors import ConfigurationError
from sparse_rtrl.experiments.config import FROZEN, Experiment, Method
from sparse_rtrl.experiments.protocol import adapt, load_model
from sparse_rtrl.experiments.pretraining import pretrain
from sparse_rtrl.tasks import TASKS, make_task

CELLS = ("vanilla", "lstm", "gru")


def small_experiment(cell: str, hidden: int = 16, **task_options) -> Experiment:
    """A pretraining run of a few seconds: enough for A's one-step recall (MSE < 1e-2)."""
    return Experiment(
        name="credit", claims=(), task="lag_shift", task_options=task_options, cell=cell,
        hidden_size=hidden, methods=(Method("frozen", FROZEN),), pretrain_updates=250,
        pretrain_chunk=30, pretrain_burn_in=5, pre_shift_steps=200, adapt_steps=1500,
        dtype="float64",
    )


_SNAPSHOTS: dict = {}


def pretrained(cell: str, seed: int = 0, **task_options):
    """(experiment, snapshot dict) of one cell, cached across the tests of this file."""
    key = (cell, seed, tuple(sorted(task_options.items())))
    if key not in _SNAPSHOTS:
        exp = small_experiment(cell, **task_options)
        _SNAPSHOTS[key] = (exp, pretrain(exp, seed).to_dict())
    return _SNAPSHOTS[key]


def frozen_states(exp: Experiment, snapshot: dict, stream) -> np.ndarray:
    """h_t of the frozen pretrained cell along ``stream``, from the zero state."""
    task = make_task(exp.task, **exp.task_options)
    cell, _ = load_model(exp, task, 0, snapshot, torch.float64, torch.device("cpu"))
    state, out = None, []
    with torch.no_grad():
        for x in stream.inputs:
            state = cell.forward_state(x, state)
            out.append(cell.hidden(state).clone())
    return torch.stack(out).numpy()


def explained_variance(features: np.ndarray, target: np.ndarray) -> float:
    """R² on held-out steps of the least-squares fit target ≈ [features, 1]·β (fit on the
    first half, scored on the second, so a readout cannot score by overfitting noise)."""
    X = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    half = len(X) // 2
    beta, *_ = np.linalg.lstsq(X[:half], target[:half], rcond=None)
    residual = target[half:] - X[half:] @ beta
    return 1.0 - float(residual.var() / target[half:].var())


# -- the construction ------------------------------------------------------------------------
def test_lag_shift_is_registered():
    assert TASKS["lag_shift"] is type(make_task("lag_shift"))


@pytest.mark.parametrize("lag, memory", [(2, 1), (8, 1), (50, 3), (5, 0)])
def test_lag_shift_targets_equal_the_lagged_inputs(lag, memory):
    task = make_task("lag_shift", lag=lag, memory_a=memory, scale=1.5, weight_a=0.7)
    s = task.sample_shift(120, 200, 3)
    a, b = s.inputs[:, 0].numpy(), s.inputs[:, 1].numpy()
    y = s.targets[:, 0].numpy()
    assert set(np.unique(s.inputs.numpy())) == {-1.0, 1.0}
    t = np.arange(max(lag, memory), 320)
    want = 0.7 * a[t - memory] + np.where(t >= 120, 1.5 * b[t - lag], 0.0)
    np.testing.assert_array_equal(y[t], want)
    np.testing.assert_array_equal(s.info["new_term"][:120].numpy(), 0.0)
    np.testing.assert_array_equal(s.info["new_term"][t[t >= 120], 0].numpy(), 1.5 * b[t[t >= 120] - lag])
    # steps before the lag reach into inputs drawn before the window: still ±c, not 0
    assert set(np.abs(s.info["new_term"][120 : 120 + lag].numpy().ravel())) <= {1.5}


def test_lag_shift_new_term_has_zero_mean_unit_scale_and_is_uncorrelated():
    task = make_task("lag_shift", lag=8, scale=2.0)
    s = task.sample("B", 40_000, 1)
    z, base = s.info["new_term"][:, 0].numpy(), s.info["base"][:, 0].numpy()
    assert task.new_term_variance() == 4.0
    np.testing.assert_array_equal(z**2, 4.0)  # ±c at every step: variance c² exactly
    assert abs(z.mean()) < 4 * 2.0 / np.sqrt(len(z))
    assert abs(np.corrcoef(z, base)[0, 1]) < 4 / np.sqrt(len(z))
    # uncorrelated with every input after step t − d (and with the current input)
    for channel in (0, 1):
        for k in range(0, 8):
            x = s.inputs[8 - k : len(z) - k, channel].numpy()  # x_{t−k} for t = 8 …
            assert abs(np.corrcoef(z[8:], x)[0, 1]) < 4 / np.sqrt(len(x))
    x = s.inputs[:-8, 1].numpy()
    assert np.corrcoef(z[8:], x)[0, 1] == pytest.approx(1.0)  # it is b_{t−d} itself


@pytest.mark.parametrize("bad, match", [
    ({"lag": 0}, "lag must be an int ≥ 1"),
    ({"memory_a": -1}, "memory_a must be an int ≥ 0"),
    ({"scale": 0.0}, "scale must be > 0"),
    ({"noise_std": -0.1}, "noise_std must be ≥ 0"),
])
def test_lag_shift_rejects_bad_options(bad, match):
    with pytest.raises(ConfigurationError, match=match):
        make_task("lag_shift", **bad)


# -- what a network pretrained on A can and cannot do after the shift ---------------------------
@pytest.mark.parametrize("cell", CELLS)
def test_frozen_model_stays_calibrated_its_loss_grows_by_the_new_terms_variance(cell):
    exp, snap = pretrained(cell)
    task = make_task(exp.task, **exp.task_options)
    result = adapt(exp, exp.methods[0], 0, snap, lr=0.0)
    assert result["L_pre_shift"] < 0.02  # A was learnt
    want = result["L_pre_shift"] + task.new_term_variance()
    assert result["L"] == pytest.approx(want, abs=0.01)


@pytest.mark.parametrize("cell", CELLS)
def test_frozen_state_holds_nothing_of_the_new_term_but_holds_what_a_needed(cell):
    exp, snap = pretrained(cell)
    task = make_task(exp.task, **exp.task_options)
    s = task.sample_shift(200, 4000, 5)
    h = frozen_states(exp, snap, s)[200:]
    features = np.concatenate([h, s.inputs[200:].numpy()], axis=1)
    new = explained_variance(features, s.info["new_term"][200:, 0].numpy())
    base = explained_variance(features, s.info["base"][200:, 0].numpy())
    assert base > 0.9  # positive control: the term it was trained on is read off the state
    assert new < 0.03  # the new term d = 8 steps back: nothing for a readout to use


def test_the_readout_measure_sees_a_recent_input_the_state_does_hold():
    # negative control for the measure itself: at lag 1 the state does hold b_{t−1}
    exp, snap = pretrained("vanilla", lag=1)
    task = make_task(exp.task, **exp.task_options)
    s = task.sample_shift(200, 4000, 5)
    h = frozen_states(exp, snap, s)[200:]
    features = np.concatenate([h, s.inputs[200:].numpy()], axis=1)
    assert explained_variance(features, s.info["new_term"][200:, 0].numpy()) > 0.3


def test_lag_dial_memory_of_the_new_term_fades_with_the_lag():
    exp, snap = pretrained("vanilla")
    s = make_task("lag_shift", lag=50).sample_shift(200, 4000, 6)
    h = frozen_states(exp, snap, s)[200:]
    features = np.concatenate([h, s.inputs[200:].numpy()], axis=1)
    r2 = {d: explained_variance(features[60:], s.inputs[260 - d : 4200 - d, 1].numpy()) for d in (1, 2, 8, 50)}
    assert r2[1] > r2[2] > 0.01 and r2[8] < 0.03 and r2[50] < 0.03


# -- the second family: a teacher RNN's output, d steps late ---------------------------------
def test_delayed_teacher_term_equals_a_torch_rnn_run_of_the_teacher():
    from sparse_rtrl.tasks.base import stream_generator

    task = make_task("delayed_teacher", lag=6, scale=0.5)
    s = task.sample("B", 300, 2)
    # replay the stream's draw of the inputs, including the ones before the window
    pad = task.history()
    gen = stream_generator("delayed_teacher", "B", 2)
    x = 2.0 * torch.randint(0, 2, (pad + 300, 2), generator=gen).to(torch.float64) - 1.0
    torch.testing.assert_close(x[pad:], s.inputs, rtol=0, atol=0)
    t = task.teacher()
    rnn = torch.nn.RNNCell(1, task.teacher_hidden, bias=False).double()
    with torch.no_grad():
        rnn.weight_ih.copy_(t["u"].unsqueeze(1))
        rnn.weight_hh.copy_(t["w"])
        r, q = torch.zeros(1, task.teacher_hidden, dtype=torch.float64), []
        for b in x[:, 1]:
            r = rnn(b.reshape(1, 1), r)
            q.append(float(t["v"] @ r[0]))
    q = torch.tensor(q, dtype=torch.float64)
    want = 0.5 * q[pad - 6 : pad - 6 + 300] / t["scale"]
    torch.testing.assert_close(s.info["new_term"][:, 0], want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.targets[:, 0], x[pad - 1 : pad + 299, 0] + want)


def test_delayed_teacher_new_term_has_zero_mean_variance_c2_and_no_recent_inputs():
    task = make_task("delayed_teacher", scale=2.0)
    assert task.new_term_variance() == 4.0
    s = task.sample("B", 20_000, 4)
    z = s.info["new_term"][:, 0].numpy()
    assert abs(z.mean()) < 4 * 2.0 / np.sqrt(len(z) / 10)  # correlated steps: fewer effective samples
    assert z.var() == pytest.approx(4.0, rel=0.05)
    for channel in (0, 1):
        for k in range(task.lag):
            x = s.inputs[task.lag - k : len(z) - k, channel].numpy()
            assert abs(np.corrcoef(z[task.lag :], x)[0, 1]) < 0.04
    # ... while b_{t−d}, …, b_{t−d−15} explain most of it (the teacher is nearly linear)
    lags = range(task.lag, task.lag + 16)
    window = np.stack([s.inputs[40 - k : len(z) - k, 1].numpy() for k in lags], axis=1)
    assert explained_variance(window, z[40:]) > 0.85


def test_delayed_teacher_frozen_model_calibrated_and_state_blind_to_the_new_term():
    exp, snap = pretrained("vanilla")  # regime A of delayed_teacher is lag_shift's A
    exp = exp.with_(task="delayed_teacher", task_options={"lag": 8})
    task = make_task(exp.task, **exp.task_options)
    result = adapt(exp, exp.methods[0], 0, snap, lr=0.0)
    assert result["L"] == pytest.approx(result["L_pre_shift"] + task.new_term_variance(), abs=0.05)
    s = task.sample_shift(200, 4000, 5)
    h = frozen_states(exp, snap, s)[200:]
    features = np.concatenate([h, s.inputs[200:].numpy()], axis=1)
    assert explained_variance(features, s.info["new_term"][200:, 0].numpy()) < 0.03
    assert explained_variance(features, s.info["base"][200:, 0].numpy()) > 0.9


# -- registering a task from user code ------------------------------------------------------
def test_a_task_registered_from_user_code_is_built_by_name():
    from dataclasses import dataclass

    from sparse_rtrl.tasks import LagShift, register

    @register
    @dataclass(frozen=True)
    class Twice(LagShift):
        name = "user_twice_lag"

        def new_term(self, b):
            return 2 * super().new_term(b)

    try:
        task = make_task("user_twice_lag", lag=3)
        s = task.sample("B", 50, 0)
        np.testing.assert_array_equal(np.abs(s.info["new_term"].numpy()), 2.0)
    finally:
        del TASKS["user_twice_lag"]
