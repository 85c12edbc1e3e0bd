"""The cornerstone: full RTRL's transported gradient equals the BPTT gradient by autograd,
per step and summed; sparse(k=N) equals full; sparse(k=0) equals immediate; the immediate
rule and traces equal their definitions computed from autodiff Ī."""

import pytest
import torch
from torch import nn

from reference import bptt_per_step_grads, dense_derivatives, rel_err
from sparse_rtrl import OnlineLearner

from conftest import CELL_KINDS, make_cell
from test_cells import custom_step, make_custom, torch_step, torch_twin

T, B = 12, 2


def readout_vectors(H, seed=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, H, generator=g, dtype=torch.float64)


def loss_of_h(r, t, h):
    """A nonlinear loss of h_t so that δ_t depends on h_t."""
    return (r[t] * h).sum() + 0.5 * (h**2).sum()


def run_learner(learner, xs, r, per_step=True):
    """Per-step gradient increments of every transported parameter."""
    params = learner.cell.transported_parameters()
    increments = []
    for t in range(xs.shape[0]):
        before = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
        h = learner.step(xs[t])
        learner.backward(loss_of_h(r, t, h))
        increments.append([p.grad - b for p, b in zip(params, before)])
    return increments


def inputs(I, seed=8):
    return torch.randn(T, B, I, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def assert_same(incs, ref, tol=1e-9):
    for t, (a, b) in enumerate(zip(incs, ref)):
        for ga, gb in zip(a, b):
            assert rel_err(ga, gb) < tol, f"step {t}: relative error {rel_err(ga, gb):.2e}"
    summed = [sum(step[i] for step in incs) for i in range(len(incs[0]))]
    summed_ref = [sum(step[i] for step in ref) for i in range(len(ref[0]))]
    for ga, gb in zip(summed, summed_ref):
        assert rel_err(ga, gb) < tol


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_full_rtrl_equals_bptt_of_torch_cell(kind):
    cell = make_cell(kind, I=3, n=5)
    twin = torch_twin(cell, kind)
    step = torch_step(twin, kind)
    xs, r = inputs(3), readout_vectors(5)
    n = cell.hidden_size
    ref = bptt_per_step_grads(
        step, list(twin.parameters()), xs, lambda t, s: loss_of_h(r, t, s[..., :n]),
        torch.zeros(B, cell.state_size, dtype=torch.float64),
    )
    incs = run_learner(OnlineLearner(cell, "full"), xs, r)
    assert_same(incs, ref)


def test_full_rtrl_equals_bptt_at_the_paper_profiles_largest_size():
    """n = 256 with one input, as in the C2 experiment, where full RTRL adapts worst of all
    methods: the transport itself stays exact at that size."""
    cell = make_cell("vanilla", I=1, n=256)
    twin = torch_twin(cell, "vanilla")
    xs, r = inputs(1), readout_vectors(256)
    ref = bptt_per_step_grads(torch_step(twin, "vanilla"), list(twin.parameters()), xs,
                              lambda t, s: loss_of_h(r, t, s), torch.zeros(B, 256, dtype=torch.float64))
    assert_same(run_learner(OnlineLearner(cell, "full"), xs, r), ref)


def test_full_rtrl_equals_bptt_leaky_vanilla():
    cell = make_cell("vanilla", I=2, n=4, leak=0.25)

    def step(params, s, x):
        a, b, c, d = params
        return 0.75 * s + 0.25 * torch.tanh(x @ a.T + c + s @ b.T + d)

    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    xs, r = inputs(2), readout_vectors(4)
    ref = bptt_per_step_grads(step, params, xs, lambda t, s: loss_of_h(r, t, s),
                              torch.zeros(B, 4, dtype=torch.float64))
    assert_same(run_learner(OnlineLearner(cell, "full"), xs, r), ref)


def test_full_rtrl_equals_bptt_custom_autodiff_cell():
    cell = make_custom(N=4, I=2)
    names = ["w", "u", "g"]
    params = [p.detach().clone().requires_grad_() for p in cell.transported_parameters()]

    def step(ps, s, x):  # batched by a plain loop: independent of the library's vmap
        return torch.stack([custom_step(dict(zip(names, ps)), s[b], x[b]) for b in range(s.shape[0])])

    xs, r = inputs(2), readout_vectors(3)
    ref = bptt_per_step_grads(step, params, xs, lambda t, s: loss_of_h(r, t, s[..., :3]),
                              torch.zeros(B, 4, dtype=torch.float64))
    assert_same(run_learner(OnlineLearner(cell, "full"), xs, r), ref)


def test_torch_cell_passed_directly_learns_its_own_parameters():
    torch.manual_seed(0)
    twin = nn.LSTMCell(3, 4).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    # the reference: torch's own cell, unrolled by autograd
    twin(x[1], twin(x[0]))[0].sum().backward()
    expected = twin.weight_hh.grad.clone()
    twin.zero_grad()
    learner = OnlineLearner(twin, "full")
    learner.step(x[0])
    learner.backward(learner.step(x[1]).sum())
    assert expected.abs().sum() > 0
    assert rel_err(twin.weight_hh.grad, expected) < 1e-12


@pytest.mark.parametrize("kind", CELL_KINDS)
@pytest.mark.parametrize("granularity", ["row", "column"])
def test_sparse_with_all_paths_equals_full(kind, granularity):
    cell = make_cell(kind)
    xs, r = inputs(3), readout_vectors(5)
    full = run_learner(OnlineLearner(cell, "full"), xs, r)
    cell.zero_grad()
    N = cell.state_size
    sparse = run_learner(OnlineLearner(cell, "sparse", k=N, granularity=granularity), xs, r)
    assert_same(sparse, full, tol=1e-12)


@pytest.mark.parametrize("kind", [*CELL_KINDS, "custom"])
def test_sparse_with_no_paths_equals_immediate(kind):
    cell = make_custom() if kind == "custom" else make_cell(kind)
    xs = inputs(cell.input_size)
    r = readout_vectors(cell.hidden_size)
    imm = run_learner(OnlineLearner(cell, "immediate"), xs, r)
    cell.zero_grad()
    for granularity in ("row", "column"):
        sp = run_learner(OnlineLearner(cell, "sparse", k=0, granularity=granularity), xs, r)
        cell.zero_grad()
        assert_same(sp, imm, tol=1e-13)


def reference_trace_run(cell, step, params, xs, r, decay):
    """M_t = λ M_{t−1} + Ī_t with Ī from autodiff, g_t = δ_t·M_t, per stream."""
    H = cell.hidden_size
    N = cell.state_size
    P = sum(p.numel() for p in params)
    M = torch.zeros(B, N, P, dtype=torch.float64)
    s = torch.zeros(B, N, dtype=torch.float64)
    out = []
    for t in range(T):
        new_s = []
        for b in range(B):
            _, Ib = dense_derivatives(step, params, s[b], xs[t, b])
            M[b] = decay * M[b] + Ib
            new_s.append(step(params, s[b], xs[t, b]))
        s = torch.stack(new_s)
        h = s[:, :H].clone().requires_grad_()
        (delta,) = torch.autograd.grad(loss_of_h(r, t, h), h)
        g = torch.einsum("bh,bhp->p", delta, M[:, :H])
        sizes = [p.numel() for p in params]
        out.append([c.reshape(p.shape) for c, p in zip(g.split(sizes), params)])
    return out


@pytest.mark.parametrize("kind", CELL_KINDS)
@pytest.mark.parametrize("decay", [0.0, 0.7])
def test_trace_and_immediate_equal_their_definition(kind, decay):
    cell = make_cell(kind)
    twin = torch_twin(cell, kind)
    step = torch_step(twin, kind)
    params = [p.detach() for p in twin.parameters()]
    xs, r = inputs(3), readout_vectors(5)
    ref = reference_trace_run(cell, step, params, xs, r, decay)
    rule = ("immediate", {}) if decay == 0.0 else ("trace", {"decay": decay})
    incs = run_learner(OnlineLearner(cell, rule[0], **rule[1]), xs, r)
    assert_same(incs, ref, tol=1e-12)


def test_trace_on_custom_cell_equals_definition():
    cell = make_custom()
    names = ["w", "u", "g"]
    params = [p.detach() for p in cell.transported_parameters()]

    def step(ps, s, x):
        return custom_step(dict(zip(names, ps)), s, x)

    xs, r = inputs(2), readout_vectors(3)
    ref = reference_trace_run(cell, step, params, xs, r, 0.5)
    assert_same(run_learner(OnlineLearner(cell, "trace", decay=0.5), xs, r), ref, tol=1e-12)
