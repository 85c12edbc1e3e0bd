"""Cells match torch's own cells, and their closed-form J_t and Ī_t match autodiff."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from reference import dense_derivatives, rel_err
from sparse_rtrl.cells import CELLS, FunctionalCell, from_torch
from sparse_rtrl.ensemble import member_cell, stack_cells

from conftest import CELL_KINDS, make_cell

def torch_type(kind):
    """torch's cell with the equations of a registered cell (None: it has none)."""
    return CELLS[kind].torch_type


def torch_twin(cell, kind):
    """torch's cell with the same parameters; for a registered cell that has no torch twin
    (``torch_type`` None), a float64 copy of the cell itself (see :func:`torch_step`)."""
    if torch_type(kind) is None:
        return copy.deepcopy(cell).double()
    twin = torch_type(kind)(cell.input_size, cell.hidden_size, bias=cell.bias).double()
    twin.load_state_dict(cell.state_dict())
    return twin


def torch_step(twin, kind):
    """s' = f(θ, s, x) with torch's cell, as a function of a parameter list (for autodiff).
    A cell with no torch twin steps by its own ``step``: its equations, but derivatives by
    autodiff, independent of its closed-form J_t and Ī_t."""
    if torch_type(kind) is None:
        def own_step(params, s, x):
            s3, x3 = s.reshape(1, -1, s.shape[-1]), x.reshape(1, -1, x.shape[-1])
            return twin.step([p.unsqueeze(0) for p in params], s3, x3).reshape(s.shape)

        return own_step
    names = [n for n, _ in twin.named_parameters()]
    n = twin.hidden_size

    def step(params, s, x):
        p = dict(zip(names, params))
        if kind == "lstm":
            h, c = functional_call(twin, p, (x, (s[..., :n], s[..., n:])))
            return torch.cat([h, c], -1)
        return functional_call(twin, p, (x, s))

    return step


@pytest.mark.parametrize("kind", [k for k in CELL_KINDS if torch_type(k) is not None])
@pytest.mark.parametrize("bias", [True, False])
def test_torch_state_dict_loads_and_outputs_match(kind, bias):
    torch.manual_seed(1)
    twin = torch_type(kind)(3, 6, bias=bias).double()
    ours = CELLS[kind](3, 6, bias=bias).double()
    ours.load_state_dict(twin.state_dict())
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    hx_t = hx_o = None
    for t in range(7):
        hx_t = twin(x[t], hx_t)
        hx_o = ours(x[t], hx_o)
    for a, b in zip(hx_o if kind == "lstm" else [hx_o], hx_t if kind == "lstm" else [hx_t]):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)
    # unbatched input gives the unbatched output
    single = ours(x[0, 0])
    ref = twin(x[0, 0])
    assert torch.allclose(single[0] if kind == "lstm" else single, ref[0] if kind == "lstm" else ref)


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_closed_form_derivatives_match_autodiff_of_torch_cell(kind):
    cell = make_cell(kind, I=3, n=5)
    twin = torch_twin(cell, kind)
    step = torch_step(twin, kind)
    params = [p.detach() for p in twin.parameters()]
    torch.manual_seed(2)
    B = 3
    s = torch.randn(B, cell.state_size, dtype=torch.float64)
    x = torch.randn(B, 3, dtype=torch.float64)
    d = cell.step_with_derivatives(cell.stacked_parameters(), s[None], x[None])
    J, Ibar = d.jacobian[0], d.immediate.dense()[0]
    for b in range(B):
        J_ref, I_ref = dense_derivatives(step, params, s[b], x[b])
        assert rel_err(J[b], J_ref) < 1e-13
        assert rel_err(Ibar[b], I_ref) < 1e-13
        assert rel_err(d.state[0, b], step(params, s[b], x[b])) < 1e-14


def test_leaky_vanilla_derivatives_match_autodiff():
    cell = make_cell("vanilla", I=2, n=4, leak=0.3)
    w_ih, w_hh, b_ih, b_hh = [p.detach() for p in cell.parameters()]

    def step(params, s, x):
        a, b, c, d = params
        return 0.7 * s + 0.3 * torch.tanh(a @ x + c + b @ s + d)

    torch.manual_seed(3)
    s, x = torch.randn(4, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    J_ref, I_ref = dense_derivatives(step, [w_ih, w_hh, b_ih, b_hh], s, x)
    d = cell.step_with_derivatives(cell.stacked_parameters(), s.view(1, 1, 4), x.view(1, 1, 2))
    assert rel_err(d.jacobian[0, 0], J_ref) < 1e-13
    assert rel_err(d.immediate.dense()[0, 0], I_ref) < 1e-13


def test_relu_vanilla_matches_torch():
    torch.manual_seed(4)
    twin = nn.RNNCell(3, 5, nonlinearity="relu").double()
    ours = from_torch(twin)
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(ours(x), twin(x), atol=1e-14, rtol=0)


def test_from_torch_shares_parameters():
    twin = nn.GRUCell(2, 3)
    ours = from_torch(twin)
    assert ours.weight_hh is twin.weight_hh
    with pytest.raises(TypeError, match="RNNCell, LSTMCell or GRUCell"):
        from_torch(nn.Linear(2, 2))


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_ensemble_member_derivatives_equal_solo(kind):
    cells = [make_cell(kind, seed=s) for s in range(3)]
    ens = stack_cells(cells)
    assert ens.weight_hh.shape[0] == 3
    torch.manual_seed(5)
    s = torch.randn(3, 2, ens.state_size, dtype=torch.float64)
    x = torch.randn(3, 2, 3, dtype=torch.float64)
    d = ens.step_with_derivatives(ens.stacked_parameters(), s, x)
    for e, c in enumerate(cells):
        de = c.step_with_derivatives(c.stacked_parameters(), s[e : e + 1], x[e : e + 1])
        assert torch.allclose(d.jacobian[e], de.jacobian[0], atol=1e-15, rtol=0)
        assert torch.allclose(d.immediate.dense()[e], de.immediate.dense()[0], atol=1e-15, rtol=0)
        back = member_cell(ens, e)
        assert all(torch.equal(a, b) for a, b in zip(back.parameters(), c.parameters()))


def custom_step(params, s, x):
    """A cell none of the closed forms cover: gated leaky units with a multiplicative input."""
    a = torch.tanh(params["w"] @ s + params["u"] @ x)
    gate = torch.sigmoid(params["g"] * s)
    return gate * s + (1 - gate) * a * (1 + 0.1 * x.sum())


def make_custom(N=4, I=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = {
        "w": torch.randn(N, N, generator=g, dtype=torch.float64) * 0.8,
        "u": torch.randn(N, I, generator=g, dtype=torch.float64),
        "g": torch.randn(N, generator=g, dtype=torch.float64),
    }
    return FunctionalCell(custom_step, params, input_size=I, state_size=N, hidden_size=N - 1)


def test_functional_cell_derivatives_match_reference():
    cell = make_custom()
    params = [p.detach() for p in cell.transported_parameters()]

    def step(ps, s, x):
        return custom_step(dict(zip(["w", "u", "g"], ps)), s, x)

    torch.manual_seed(6)
    s, x = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    d = cell.step_with_derivatives(cell.stacked_parameters(), s[None], x[None])
    for b in range(2):
        J_ref, I_ref = dense_derivatives(step, params, s[b], x[b])
        assert rel_err(d.jacobian[0, b], J_ref) < 1e-13
        assert rel_err(d.immediate.dense()[0, b], I_ref) < 1e-13


def test_functional_cell_from_module():
    class Leaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 3).double()

        def forward(self, x, s):
            return 0.5 * s + torch.tanh(self.lin(torch.cat([x, s])))

    m = Leaky()
    cell = FunctionalCell.from_module(m, input_size=2, state_size=3)
    assert cell.transported_parameters()[0] is m.lin.weight
    x, s = torch.randn(2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    assert torch.allclose(cell(x, s), m(x, s))


def test_functional_cell_rejects_wrong_output_shape():
    cell = FunctionalCell(lambda p, s, x: p["w"] @ s[:2], {"w": torch.ones(2, 2)}, 1, 3)
    with pytest.raises(ValueError, match="must return the next state"):
        cell(torch.ones(1), torch.ones(3))


def test_replacing_a_parameter_object_is_seen_by_the_cached_layout():
    """The parameter list and layout are cached; assigning a new Parameter rebuilds them."""
    cell = make_cell("vanilla", I=3, n=5)
    first = cell.transported_parameters()
    assert first[1] is cell.weight_hh and cell.layout().size == 5 * 3 + 25 + 10
    cell.weight_hh = nn.Parameter(torch.zeros(5, 5, dtype=torch.float64))
    assert cell.transported_parameters()[1] is cell.weight_hh
    custom = make_custom()
    w = custom.transported_parameters()[0]
    custom.params["w"] = nn.Parameter(w.detach().clone())
    assert custom.transported_parameters()[0] is custom.params["w"] and custom.transported_parameters()[0] is not w
