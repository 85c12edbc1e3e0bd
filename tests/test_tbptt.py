"""Online truncated BPTT: exact BPTT of L_t through the last T steps, with current parameters."""

import pytest
import torch

from reference import rel_err
from sparse_rtrl import OnlineLearner
from sparse_rtrl.errors import ConfigurationError

from conftest import CELL_KINDS, make_cell
from test_cells import make_custom, torch_step, torch_twin
from test_exactness import B, T, assert_same, inputs, loss_of_h, readout_vectors, run_learner


def build(kind):
    return make_custom() if kind == "custom" else make_cell(kind)


@pytest.mark.parametrize("kind", [*CELL_KINDS, "custom"])
def test_window_covering_the_sequence_equals_full_rtrl(kind):
    cell = build(kind)
    xs, r = inputs(cell.input_size), readout_vectors(cell.hidden_size)
    full = run_learner(OnlineLearner(cell, "full"), xs, r)
    cell.zero_grad()
    assert_same(run_learner(OnlineLearner(cell, "tbptt", window=T), xs, r), full, tol=1e-12)


@pytest.mark.parametrize("kind", ["vanilla", "lstm", "custom"])
def test_window_of_one_equals_immediate(kind):
    cell = build(kind)
    xs, r = inputs(cell.input_size), readout_vectors(cell.hidden_size)
    imm = run_learner(OnlineLearner(cell, "immediate"), xs, r)
    cell.zero_grad()
    assert_same(run_learner(OnlineLearner(cell, "tbptt", window=1), xs, r), imm, tol=1e-12)


@pytest.mark.parametrize("kind", ["vanilla", "gru"])
def test_window_equals_truncated_autograd(kind):
    w = 4
    cell = build(kind)
    twin = torch_twin(cell, kind)
    step = torch_step(twin, kind)
    params = list(twin.parameters())
    xs, r = inputs(3), readout_vectors(5)
    with torch.no_grad():  # the true trajectory (parameters do not change)
        states = [torch.zeros(B, cell.state_size, dtype=torch.float64)]
        for t in range(T):
            states.append(step(params, states[-1], xs[t]))
    ref = []
    for t in range(T):
        start = max(0, t + 1 - w)
        s = states[start].clone()
        for tau in range(start, t + 1):
            s = step(params, s, xs[tau])
        ref.append(list(torch.autograd.grad(loss_of_h(r, t, s[:, :5]), params)))
    assert_same(run_learner(OnlineLearner(cell, "tbptt", window=w), xs, r), ref, tol=1e-12)


def test_window_uses_current_parameters():
    """After an optimizer step, h_t is recomputed through the window with the new θ."""
    cell = make_cell("vanilla")
    learner = OnlineLearner(cell, "tbptt", window=3)
    opt = torch.optim.SGD(cell.parameters(), lr=0.5)
    xs = inputs(3)
    states = [torch.zeros(B, 5, dtype=torch.float64)]
    for t in range(6):
        h = learner.step(xs[t])
        if t >= 2:  # replay: the state three steps back, then the window with today's θ
            s = states[t - 2]
            with torch.no_grad():
                for tau in range(t - 2, t + 1):
                    s = cell.step([p.unsqueeze(0) for p in cell.parameters()], s.unsqueeze(0), xs[tau].unsqueeze(0))[0]
            assert rel_err(h.detach(), s) < 1e-14
        states.append(h.detach().clone())
        learner.backward((h**2).sum())
        opt.step()
        opt.zero_grad()


def test_bad_window_is_named():
    with pytest.raises(ConfigurationError, match="window must be an int ≥ 1"):
        OnlineLearner(make_cell("vanilla"), "tbptt", window=0)
