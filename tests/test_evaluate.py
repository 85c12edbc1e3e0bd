"""prequential() against the hand-written test-then-train loop it documents, bit for bit."""

import math

import numpy as np
import pytest
import torch

from sparse_rtrl import DivergenceError, InputError, OnlineLearner, VanillaRNN
from sparse_rtrl.cells import GRU
from sparse_rtrl.evaluate import (
    Metric,
    Progress,
    Recorder,
    RunningError,
    StopOnDivergence,
    prequential,
    test_then_train,
)

T = 40


def _model(rule="sparse", cell=VanillaRNN, seed=0, **options):
    torch.manual_seed(seed)
    c = cell(2, 6).double()
    readout = torch.nn.Linear(6, 1).double()
    learner = OnlineLearner(c, rule, **options)
    opt = torch.optim.Adam([*learner.parameters(), *readout.parameters()], lr=0.05)
    return learner, readout, opt


def _stream(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, 2, generator=g, dtype=torch.float64)
    y = torch.cumsum(x[:, :1], 0) * 0.3  # depends on the past: the recurrence matters
    return x, y


def _hand_loop(learner, readout, opt, x, y, scored=None, resets=()):
    """The five-line loop of prequential's docstring, written out."""
    losses = []
    for t in range(len(x)):
        if t in resets:
            learner.reset_state()
        h = learner.step(x[t])
        if scored is not None and not scored[t]:
            losses.append(math.nan)
            continue
        loss = torch.nn.functional.mse_loss(readout(h), y[t])
        losses.append(float(loss.detach()))
        learner.backward(loss)
        opt.step()
        opt.zero_grad()
    return np.asarray(losses)


def _params(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


@pytest.mark.parametrize("rule,options", [("full", {}), ("sparse", {"k": 2, "seed": 3}),
                                          ("uoro", {"seed": 3}), ("tbptt", {"window": 4})])
@pytest.mark.parametrize("cell", [VanillaRNN, GRU])
def test_prequential_is_the_five_line_loop_bit_for_bit(rule, options, cell):
    x, y = _stream()
    a = _model(rule, cell, **options)
    b = _model(rule, cell, **options)
    result = prequential(a[0], a[1], zip(x, y), a[2])
    expected = _hand_loop(*b, x, y)
    assert result.steps == T and result.diverged_at is None and result.stopped_by is None
    assert np.array_equal(result.losses, expected)
    for p, q in zip(_params(a[0], a[1]), _params(b[0], b[1])):
        assert torch.equal(p, q)
    # and learning happened: the first loss is what an untouched model scores, not the last
    assert not np.array_equal(expected[:1], expected[-1:])


def test_score_is_recorded_before_learning():
    x, y = _stream()
    learner, readout, opt = _model("full")
    seen = []

    class Peek:
        def on_step(self, record):
            seen.append((record.y_hat.clone(), [p.detach().clone() for p in readout.parameters()]))

    prequential(learner, readout, zip(x[:3], y[:3]), opt, callbacks=[Peek()])
    # the prediction at t = 1 was made with the readout after exactly one update, i.e. the one
    # the callback saw at t = 1, and the readout changed between t = 0 and t = 1
    assert not torch.equal(seen[0][1][0], seen[1][1][0])
    torch.manual_seed(0)
    b_learner, b_readout, b_opt = _model("full")
    y_hat0, _ = test_then_train(b_learner, b_readout, x[0], y[0], b_opt)
    assert torch.equal(y_hat0.detach(), seen[0][0])
    assert torch.equal(b_readout.weight, seen[1][1][0])


def test_unscored_steps_and_resets_match_the_hand_loop():
    x, y = _stream()
    scored = [t % 3 != 0 for t in range(T)]
    resets = {10, 25}
    stream = [(x[t], y[t] if scored[t] else None, t in resets) for t in range(T)]
    a, b = _model("full"), _model("full")
    result = prequential(a[0], a[1], stream, a[2])
    expected = _hand_loop(*b, x, y, scored=scored, resets=resets)
    assert np.array_equal(np.isnan(result.losses), ~np.asarray(scored))
    assert np.array_equal(result.losses, expected, equal_nan=True)
    assert all(torch.equal(p, q) for p, q in zip(_params(a[0], a[1]), _params(b[0], b[1])))


def test_no_optimizer_scores_a_frozen_model():
    x, y = _stream()
    learner, readout, _ = _model("full")
    before = _params(learner, readout)
    result = prequential(learner, readout, zip(x, y))
    assert all(torch.equal(p, q) for p, q in zip(before, _params(learner, readout)))
    # frozen: the losses are those of the untrained cell run forward (an independent forward pass)
    cell = learner.cell
    s = None
    for t in range(T):
        s = cell.forward_state(x[t], s)
        ref = torch.nn.functional.mse_loss(readout(cell.hidden(s)), y[t])
        assert result.losses[t] == pytest.approx(ref.detach().item(), rel=1e-12)


def test_running_error_recorder_and_metric_match_numpy():
    x, y = _stream()
    learner, readout, opt = _model("full")
    err, rec = RunningError(window=7), Recorder()

    class MeanAbs:  # a river-style metric
        def __init__(self):
            self.total, self.n = 0.0, 0

        def update(self, y_true, y_pred):
            self.total += abs(y_true - y_pred)
            self.n += 1

    metric = MeanAbs()
    result = prequential(learner, readout, zip(x, y), opt,
                         callbacks=[err, rec, Metric(metric), Progress(total=T, error=err, disable=True)])
    t, y_hat, yy = rec.arrays()
    assert np.array_equal(t, np.arange(T))
    e = (y_hat - yy).reshape(-1)
    assert np.allclose((e**2), result.losses)  # the recorded loss is the squared error
    assert err.mae == pytest.approx(np.abs(e).mean())
    assert err.rmse == pytest.approx(np.sqrt((e**2).mean()))
    assert err.window_mae == pytest.approx(np.abs(e[-7:]).mean())
    assert metric.total / metric.n == pytest.approx(np.abs(e).mean())


def test_vector_loss_is_recorded_per_element_and_summed_to_learn():
    x, y = _stream()
    per_elem = lambda y_hat, target: (y_hat - target).pow(2).reshape(-1).repeat(2) * torch.tensor(
        [1.0, 2.0], dtype=torch.float64)
    a, b = _model("full"), _model("full")
    result = prequential(a[0], a[1], zip(x, y), a[2], loss=per_elem)
    assert result.losses.shape == (T, 2)
    assert np.allclose(result.losses[:, 1], 2 * result.losses[:, 0])
    # summed to learn: the same as learning from 3 × the squared error
    for t in range(T):
        h = b[0].step(x[t])
        loss = 3 * (b[1](h) - y[t]).pow(2).sum()
        b[0].backward(loss)
        b[2].step()
        b[2].zero_grad()
    for p, q in zip(_params(a[0], a[1]), _params(b[0], b[1])):
        assert torch.allclose(p, q, rtol=1e-10, atol=1e-12)


def test_divergence_stops_or_raises_and_a_bad_target_is_named():
    x, y = _stream()

    class Blowup:  # after step 11's update the readout has diverged: step 12's loss is inf
        def __init__(self, readout):
            self.readout = readout

        def on_learned(self, record):
            if record.t == 11:
                with torch.no_grad():
                    self.readout.bias.fill_(math.inf)

    learner, readout, opt = _model("full")
    result = prequential(learner, readout, zip(x, y), opt, callbacks=[Blowup(readout)])
    assert result.diverged_at == 12 and result.steps == 13
    assert math.isinf(result.losses[12]) and np.isfinite(result.losses[:12]).all()
    assert all(p.grad is None for p in readout.parameters())  # nothing half-accumulated is left
    learner, readout, opt = _model("full")
    with pytest.raises(DivergenceError, match="the loss became non-finite.*nothing was learned from this step"):
        prequential(learner, readout, zip(x, y), opt, callbacks=[Blowup(readout)], on_divergence="raise")
    bad = y.clone()
    bad[12] = math.inf
    learner, readout, opt = _model("full")
    with pytest.raises(InputError, match="the target of step 12 contains NaN or inf.*nothing was learned"):
        prequential(learner, readout, zip(x, bad), opt)
    # checked when the loss turns out non-finite (no extra host sync per step): the state has
    # stepped on x_12, as the message says, but nothing was learned from it
    assert learner.steps == 13
    twin, twin_readout, twin_opt = _model("full")
    prequential(twin, twin_readout, zip(x[:12], y[:12]), twin_opt)
    assert all(torch.equal(a, b) for a, b in zip(_params(learner.cell, readout), _params(twin.cell, twin_readout)))


def test_stop_on_divergence_ends_before_the_update():
    x, y = _stream()
    y = y.clone()
    y[5] = 1e4
    a, b = _model("full"), _model("full")
    guard = StopOnDivergence(max_loss=1e6)
    result = prequential(a[0], a[1], zip(x, y), a[2], callbacks=[guard])
    assert result.stopped_by == "StopOnDivergence" and guard.stopped_at == 5 and result.steps == 6
    _hand_loop(*b, x[:5], y[:5])  # five learned steps; step 5 was scored but not learned
    assert all(torch.equal(p, q) for p, q in zip(_params(a[1]), _params(b[1])))


def test_bad_stream_items_are_named():
    learner, readout, opt = _model("full")
    with pytest.raises(InputError, match="stream item 0"):
        prequential(learner, readout, [torch.zeros(2, dtype=torch.float64)], opt)
    with pytest.raises(InputError, match="on_divergence"):
        prequential(learner, readout, [], opt, on_divergence="ignore")


def test_on_learned_sees_the_parameters_after_each_update():
    """on_learned runs after the optimizer step: it reads θ_t, the hand loop's parameters
    right after opt.step(); on_step, before the update, reads θ_{t−1}."""
    x, y = _stream()
    learner, readout, opt = _model("full")
    before, after = [], []

    class Watch:
        def on_step(self, record):
            before.append(readout.weight.detach().clone())

        def on_learned(self, record):
            after.append(readout.weight.detach().clone())

    prequential(learner, readout, zip(x, y), opt, callbacks=[Watch()])
    learner2, readout2, opt2 = _model("full")
    hand = []
    for t in range(len(x)):
        h = learner2.step(x[t])
        loss = torch.nn.functional.mse_loss(readout2(h), y[t])
        learner2.backward(loss)
        opt2.step()
        opt2.zero_grad()
        hand.append(readout2.weight.detach().clone())
    assert all(torch.equal(a, b) for a, b in zip(after, hand)) and len(after) == len(x)
    assert all(torch.equal(a, b) for a, b in zip(before[1:], hand[:-1]))
