"""The shared contract every transport rule passes with every cell: shapes, finiteness,
ensemble member = solo run, state_dict round-trip, errors on bad input, divergence."""

import copy

import pytest
import torch
from torch import nn

from sparse_rtrl import DivergenceError, InputError, OnlineLearner, StackedLinear, stack_cells
from sparse_rtrl.errors import ConfigurationError
from sparse_rtrl.transport import RULES, unsupported_reason

from conftest import CELL_KINDS, make_cell
from rule_cases import EXAMPLES, case_id, cases
from test_cells import make_custom

CASES = cases(RULES)
KINDS = [*CELL_KINDS, "custom"]


def build(kind, seed=0):
    return make_custom(seed=seed) if kind == "custom" else make_cell(kind, seed=seed)


def skip_unsupported(name, options, cell):
    """Rules that serve only some cells (KF-RTRL: vanilla only) say so in check_context."""
    reason = unsupported_reason(name, cell, **options)
    if reason is not None:
        pytest.skip(f"{name} does not support this cell: {reason}")


def test_every_registered_rule_has_examples():
    missing = [name for name in RULES if name not in EXAMPLES]
    assert not missing, f"add example options for {missing} to tests/rule_cases.py"


def stream(cell, T=8, B=2, seed=9):
    return torch.randn(T, B, cell.input_size, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def train(learner, readout, opt, xs, targets):
    losses = []
    for t in range(xs.shape[0]):
        h = learner.step(xs[t])
        loss = (readout(h) - targets[t]).pow(2).sum()
        learner.backward(loss)
        opt.step()
        opt.zero_grad()
        losses.append(loss.detach())
    return torch.stack(losses)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_finiteness(case, kind):
    name, options = case
    cell = build(kind)
    skip_unsupported(name, options, cell)
    I, n, N = cell.input_size, cell.hidden_size, cell.state_size
    learner = OnlineLearner(cell, name, **options)
    h = learner.step(torch.randn(I, dtype=torch.float64))
    assert h.shape == (n,) and h.requires_grad
    assert h.is_leaf != learner.output_carries_graph  # graph rules return h inside the window's graph
    learner.backward((h**2).sum())
    for p in cell.parameters():
        assert p.grad is not None and p.grad.shape == p.shape and torch.isfinite(p.grad).all()
    learner.reset_state()
    assert learner.state.shape == (1, N)
    learner = OnlineLearner(cell, name, **options)
    h = learner.step(torch.randn(3, I, dtype=torch.float64))
    assert h.shape == (3, n) and learner.state.shape == (3, N)
    M = learner.influence()
    P = sum(p.numel() for p in cell.parameters())
    assert M is None or M.shape == (3, N, P)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("kind", KINDS)
def test_ensemble_member_equals_solo_run(case, kind):
    name, options = case
    E = 3
    cells = [build(kind, seed=s) for s in range(E)]
    skip_unsupported(name, options, cells[0])
    readouts = []
    for s in range(E):
        torch.manual_seed(100 + s)
        readouts.append(nn.Linear(cells[0].hidden_size, 1).double())
    xs = stream(cells[0])
    targets = torch.randn(xs.shape[0], E, xs.shape[1], 1, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(3))
    ens_cell = stack_cells([copy.deepcopy(c) for c in cells])
    ens_readout = StackedLinear.from_linears(readouts)
    learner = OnlineLearner(ens_cell, name, **options)
    opt = torch.optim.Adam([*learner.parameters(), *ens_readout.parameters()], lr=0.01)
    ens_losses = train(learner, ens_readout, opt, xs, targets)
    solo_total = torch.zeros_like(ens_losses)
    for e in range(E):
        solo_options = dict(options)
        if "seed" in solo_options:
            solo_options["seed"] = options["seed"] + e
        elif name == "sparse":
            solo_options["seed"] = e
        solo = OnlineLearner(cells[e], name, **solo_options)
        opt = torch.optim.Adam([*solo.parameters(), *readouts[e].parameters()], lr=0.01)
        losses = []
        for t in range(xs.shape[0]):
            h = solo.step(xs[t])
            loss = (readouts[e](h) - targets[t, e]).pow(2).sum()
            solo.backward(loss)
            opt.step()
            opt.zero_grad()
            losses.append(loss.detach())
        solo_total += torch.stack(losses)
        for a, b in zip(ens_cell.parameters(), cells[e].parameters()):
            assert torch.allclose(a[e], b, rtol=1e-10, atol=1e-12)
    # the ensemble's loss is the sum of its members' losses, step by step
    assert torch.allclose(ens_losses, solo_total, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("kind", ["vanilla", "lstm", "custom"])
def test_state_dict_round_trip_continues_bit_exactly(case, kind):
    name, options = case
    cell = build(kind)
    skip_unsupported(name, options, cell)
    torch.manual_seed(1)
    readout = nn.Linear(cell.hidden_size, 1).double()
    learner = OnlineLearner(cell, name, **options)
    opt = torch.optim.Adam([*learner.parameters(), *readout.parameters()], lr=0.01)
    xs = stream(cell, T=12)
    targets = torch.randn(12, 2, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    train(learner, readout, opt, xs[:6], targets[:6])
    saved = copy.deepcopy((learner.state_dict(), readout.state_dict(), opt.state_dict()))
    first = train(learner, readout, opt, xs[6:], targets[6:])

    cell2 = build(kind, seed=99)  # different parameters: all must come from the state_dict
    readout2 = nn.Linear(cell.hidden_size, 1).double()
    learner2 = OnlineLearner(cell2, name, **options)
    opt2 = torch.optim.Adam([*learner2.parameters(), *readout2.parameters()], lr=0.01)
    learner2.load_state_dict(saved[0])
    readout2.load_state_dict(saved[1])
    opt2.load_state_dict(saved[2])
    second = train(learner2, readout2, opt2, xs[6:], targets[6:])
    assert torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(learner.parameters(), learner2.parameters()))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_input_is_named(case):
    name, options = case
    cell = make_cell("vanilla", I=3, n=4)
    skip_unsupported(name, options, cell)
    learner = OnlineLearner(cell, name, **options)
    with pytest.raises(InputError, match=r"input of shape \(2,\) does not fit .* expected \(3,\) or \(B, 3\)"):
        learner.step(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(InputError, match="input dtype torch.float32 does not match .* x.to"):
        learner.step(torch.zeros(3))
    with pytest.raises(InputError, match="input is on meta but the cell's parameters are on cpu"):
        learner.step(torch.zeros(3, dtype=torch.float64, device="meta"))
    with pytest.raises(InputError, match="input at step 0 contains NaN or inf"):
        learner.step(torch.tensor([0.0, float("nan"), 1.0], dtype=torch.float64))
    with pytest.raises(InputError, match="backward\\(\\) needs a step\\(\\) first"):
        learner.backward(torch.zeros((), requires_grad=True))
    h = learner.step(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(InputError, match="scalar loss"):
        learner.backward(h)
    with pytest.raises(InputError, match="loss at step 0 is NaN or inf; nothing was accumulated"):
        learner.backward(h.sum() * float("inf"))
    assert all(p.grad is None for p in cell.parameters())
    with pytest.raises(InputError, match="batch of 3 streams but this learner is running 2"):
        learner.step(torch.zeros(3, 3, dtype=torch.float64))
    learner.reset_state()
    learner.step(torch.zeros(3, 3, dtype=torch.float64))  # a new batch size after a reset is fine
    h1 = learner.step(torch.zeros(3, 3, dtype=torch.float64))
    h2 = learner.step(torch.zeros(3, 3, dtype=torch.float64))
    if not learner.output_carries_graph:  # a window rule may take losses of earlier outputs
        with pytest.raises(InputError, match="depends on the h of an earlier step"):
            learner.backward(h1.sum() + h2.sum())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_divergence_keeps_last_good_state(case):
    name, options = case
    cell = make_cell("vanilla", I=3, n=4)
    skip_unsupported(name, options, cell)
    learner = OnlineLearner(cell, name, **options)
    xs = torch.randn(4, 3, dtype=torch.float64)
    for t in range(3):
        learner.backward(learner.step(xs[t]).sum())
    good_state = learner.state.clone()
    good_M = None if learner.influence() is None else learner.influence().clone()
    with torch.no_grad():
        cell.weight_hh[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="divergence at step 3: the state became non-finite") as info:
        learner.step(xs[3])
    assert info.value.step == 3 and learner.steps == 3
    assert torch.equal(learner.state, good_state)
    if good_M is not None:
        assert torch.equal(learner.influence(), good_M)


def test_unknown_rule_and_options_are_named():
    cell = make_cell("vanilla")
    with pytest.raises(ConfigurationError, match="unknown transport 'fulll': choose one of .*full"):
        OnlineLearner(cell, "fulll")
    with pytest.raises(ConfigurationError, match="transport 'trace' has no option\\(s\\) lam; its options are: decay"):
        OnlineLearner(cell, "trace", lam=0.9)
    with pytest.raises(TypeError, match="is not a cell this library knows"):
        OnlineLearner(nn.Linear(2, 2))


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam, torch.optim.RMSprop])
def test_float32_learning_with_any_optimizer_lowers_the_loss(optimizer):
    torch.manual_seed(0)
    from sparse_rtrl import VanillaRNN

    cell, readout = VanillaRNN(1, 16), nn.Linear(16, 1)
    learner = OnlineLearner(cell, "sparse", k=4)
    opt = optimizer([*learner.parameters(), *readout.parameters()], lr=0.01)
    x = torch.sin(torch.arange(601, dtype=torch.float32) * 0.3).unsqueeze(-1)
    losses = []
    for t in range(600):
        h = learner.step(x[t])
        loss = (readout(h) - x[t + 1]).pow(2).sum()
        learner.backward(loss)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-100:]) < 0.5 * sum(losses[:100])
