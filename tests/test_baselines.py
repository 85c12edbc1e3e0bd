"""The baselines of SPEC §2.2 against independent computations: UORO and KF-RTRL average to
the BPTT gradient with an error shrinking like 1/√samples and follow their papers' formulas
step by step; SnAp-1 is exact where the recurrence is diagonal and equals its dense
definition elsewhere; the gradient shadow measures what it claims; Jacobian spectra match
SVDs of autodiff Jacobians."""

import math

import pytest
import torch
from torch.func import jacrev

from reference import bptt_per_step_grads, dense_derivatives, rel_err
from sparse_rtrl import OnlineLearner, StackedLinear, VanillaRNN, stack_cells
from sparse_rtrl.cells import FunctionalCell
from sparse_rtrl.diagnostics import jacobian_spectra
from sparse_rtrl.errors import ConfigurationError, InputError
from sparse_rtrl.transport import RULES, Full, Shadowed, Sparse, detect_pattern, unsupported_reason

from conftest import CELL_KINDS, make_cell
from rule_cases import EXAMPLES
from test_cells import custom_step, make_custom, torch_step, torch_twin
from test_exactness import B, T, assert_same, inputs, loss_of_h, readout_vectors, run_learner


def torch_params(cell, kind):
    """The cell's step as a function of a parameter list, and that list (autodiff twin)."""
    twin = torch_twin(cell, kind)
    return torch_step(twin, kind), [p.detach().clone() for p in twin.parameters()]


def bptt_reference(cell, kind, xs, r):
    step, params = torch_params(cell, kind)
    params = [p.requires_grad_() for p in params]
    n = cell.hidden_size
    return bptt_per_step_grads(step, params, xs, lambda t, s: loss_of_h(r, t, s[..., :n]),
                               torch.zeros(xs.shape[1], cell.state_size, dtype=torch.float64))


# -- UORO and KF-RTRL: unbiased, error ∝ 1/√samples --------------------------------------

def replicated(cell, members):
    """An ensemble of ``members`` identical copies of a solo vanilla cell."""
    out = VanillaRNN(cell.input_size, cell.hidden_size, leak=cell.leak, ensemble_size=members).double()
    with torch.no_grad():
        for name, p in out.named_parameters():
            p.copy_(getattr(cell, name).expand_as(p))
    return out


@pytest.mark.parametrize("rule", ["uoro", "kf"])
def test_unbiased_estimators_average_to_bptt_like_one_over_sqrt_samples(rule):
    steps, samples, n_small = 5, 4096, 64
    cell = make_cell("vanilla", I=2, n=3)  # leak 1: the autograd twin is torch.nn.RNNCell
    xs = inputs(2)[:steps, :1]  # one stream
    r = readout_vectors(3)[:, :1]
    exact = bptt_reference(cell, "vanilla", xs, r)
    exact = torch.cat([sum(g[i] for g in exact).flatten() for i in range(4)])

    ens = replicated(cell, samples)
    learner = OnlineLearner(ens, rule, seed=11)  # member e draws from seed 11 + e
    for t in range(steps):
        h = learner.step(xs[t, 0])  # (E, n): the same trajectory for every member
        learner.backward(loss_of_h(r[:, 0], t, h))  # summed over members: δ_e = r_t + h_t
    estimates = torch.cat([p.grad.reshape(samples, -1) for p in ens.parameters()], dim=1)

    def rms_error(group):
        means = estimates.view(samples // group, group, -1).mean(dim=1)
        return float(((means - exact).norm(dim=1) ** 2).mean().sqrt() / exact.norm())

    one, small, large = rms_error(1), rms_error(n_small), rms_error(4 * n_small)
    assert one > 0.05, "a single sample should not be exact: the estimator is random"
    assert large < 0.7 * small, f"error {small:.3g} at {n_small} samples, {large:.3g} at {4 * n_small}"
    assert small < 1.5 * one / math.sqrt(n_small)  # 1/√n already at n_small: no bias floor


@pytest.mark.parametrize("kind", ["lstm", "custom"])
def test_uoro_follows_the_paper_step_by_step(kind):
    cell = make_custom() if kind == "custom" else make_cell(kind, I=3, n=3)
    if kind == "custom":
        names = ["w", "u", "g"]
        params = [p.detach() for p in cell.transported_parameters()]

        def step(ps, s, x):
            return custom_step(dict(zip(names, ps)), s, x)
    else:
        step, params = torch_params(cell, kind)
    xs = inputs(cell.input_size)[:4]
    learner = OnlineLearner(cell, "uoro", seed=5)
    N, P = cell.state_size, sum(p.numel() for p in params)
    gen = torch.Generator().manual_seed(5)
    st = torch.zeros(B, N, dtype=torch.float64)
    th = torch.zeros(B, P, dtype=torch.float64)
    s = torch.zeros(B, N, dtype=torch.float64)
    eps = 1e-7
    for t in range(xs.shape[0]):
        nu = 2.0 * torch.randint(0, 2, (B, N), generator=gen).double() - 1.0
        for b in range(B):
            J, Ib = dense_derivatives(step, params, s[b], xs[t, b])
            Js, nuI = J @ st[b], nu[b] @ Ib
            rho0 = math.sqrt((th[b].norm() + eps) / (Js.norm() + eps))
            rho1 = math.sqrt((nuI.norm() + eps) / (nu[b].norm() + eps))
            st[b], th[b] = rho0 * Js + rho1 * nu[b], th[b] / rho0 + nuI / rho1
        s = torch.stack([step(params, s[b], xs[t, b]) for b in range(B)])
        learner.step(xs[t])
    state = learner.transport_state
    assert rel_err(state.s_tilde[0], st) < 1e-12 and rel_err(state.theta_tilde[0], th) < 1e-12
    assert rel_err(learner.influence(), st.unsqueeze(-1) * th.unsqueeze(-2)) < 1e-12


@pytest.mark.parametrize("bias", [True, False])
def test_kf_follows_the_paper_step_by_step(bias):
    alpha, n, I = 0.6, 4, 3
    cell = make_cell("vanilla", I=I, n=n, leak=alpha, bias=bias)
    w_ih, w_hh = cell.weight_ih.detach(), cell.weight_hh.detach()
    b = (cell.bias_ih + cell.bias_hh).detach() if bias else torch.zeros(n, dtype=torch.float64)
    xs = inputs(I)[:6]
    learner = OnlineLearner(cell, "kf", seed=2)
    gen = torch.Generator().manual_seed(2)
    m = I + n + int(bias)
    u, A = torch.zeros(B, m, dtype=torch.float64), torch.zeros(B, n, n, dtype=torch.float64)
    h = torch.zeros(B, n, dtype=torch.float64)
    eps = 1e-7
    for t in range(xs.shape[0]):
        c = 2.0 * torch.randint(0, 2, (B,), generator=gen).double() - 1.0
        z = xs[t] @ w_ih.T + h @ w_hh.T + b
        D = alpha * (1 - torch.tanh(z) ** 2)
        J = (1 - alpha) * torch.eye(n, dtype=torch.float64) + D.unsqueeze(-1) * w_hh
        x_hat = torch.cat([xs[t], h] + ([torch.ones(B, 1, dtype=torch.float64)] if bias else []), -1)
        for k in range(B):
            JA = J[k] @ A[k]
            p1 = math.sqrt((JA.norm() + eps) / (u[k].norm() + eps))
            p2 = math.sqrt((D[k].norm() + eps) / (x_hat[k].norm() + eps))
            u[k], A[k] = p1 * u[k] + c[k] * p2 * x_hat[k], JA / p1 + c[k] * torch.diag(D[k]) / p2
        h = (1 - alpha) * h + alpha * torch.tanh(z)
        learner.step(xs[t])
    state = learner.transport_state
    assert rel_err(state.u[0], u) < 1e-12 and rel_err(state.A[0], A) < 1e-12
    # the dense M̃: ∂h_i/∂W_jl ≈ u_l A_ij, both biases from the constant 1
    kron = torch.einsum("bij,bl->bijl", A, u)
    blocks = [kron[..., :I], kron[..., I:I + n]] + ([kron[..., -1], kron[..., -1]] if bias else [])
    dense = torch.cat([blk.reshape(B, n, -1) for blk in blocks], dim=-1)
    assert rel_err(learner.influence(), dense) < 1e-12


@pytest.mark.parametrize("kind", ["lstm", "gru", "custom"])
def test_kf_names_the_supported_cell(kind):
    cell = make_custom() if kind == "custom" else make_cell(kind)
    with pytest.raises(ConfigurationError, match="KF-RTRL supports only the vanilla cell .* Use transport='uoro'"):
        OnlineLearner(cell, "kf")  # refused when the learner is built, before any step


def test_only_kf_is_skipped_by_the_contract_suite():
    """The suite skips (rule, cell) pairs whose check_context refuses; nothing else may. KF
    serves the unit-local cells of one gate and one state half (the vanilla cell's structure,
    whose Ī is one Kronecker product)."""
    for kind in [*CELL_KINDS, "custom"]:
        cell = make_custom() if kind == "custom" else make_cell(kind)
        kf_serves = cell.structure is not None and (cell.structure.halves, cell.structure.gates) == (1, 1)
        for name in RULES:
            for options in EXAMPLES[name]:
                reason = unsupported_reason(name, cell, **options)
                assert (reason is not None) == (name == "kf" and not kf_serves), (name, kind, reason)


# -- SnAp-1 -----------------------------------------------------------------------------

def unit_local_mask(cell, strict=False):
    """Π of the torch cells by index arithmetic: row (a, i) meets column p iff p feeds unit i.

    Block (G·n, L) entry (r, l) feeds unit r mod n (gate r div n). ``strict`` drops the
    LSTM's c-rows × output-gate columns, where Ī is structurally zero.
    """
    n, S = cell.hidden_size, cell.state_size // cell.hidden_size
    cols_unit, cols_gate = [], []
    for p in cell.parameters():
        L = p.shape[1] if p.dim() == 2 else 1
        r = torch.arange(p.numel()) // L
        cols_unit.append(r % n)
        cols_gate.append(r // n)
    unit, gate = torch.cat(cols_unit), torch.cat(cols_gate)
    rows = torch.arange(S * n)
    mask = (rows % n).unsqueeze(1) == unit.unsqueeze(0)
    if strict:
        mask &= ~(((rows // n) == 1).unsqueeze(1) & (gate == 3).unsqueeze(0))
    return mask


def masked_rtrl_reference(step, params, xs, r, H, mask):
    """M_t = Π ⊙ (J_t M_{t−1} + Ī_t) per stream with autodiff J, Ī; per-step δ_t·M_t."""
    N = mask.shape[0]
    P = mask.shape[1]
    M = torch.zeros(B, N, P, dtype=torch.float64)
    s = torch.zeros(B, N, dtype=torch.float64)
    out = []
    for t in range(xs.shape[0]):
        for b in range(B):
            J, Ib = dense_derivatives(step, params, s[b], xs[t, b])
            M[b] = mask * (J @ M[b] + Ib)
        s = torch.stack([step(params, s[b], xs[t, b]) for b in range(B)])
        h = s[:, :H].clone().requires_grad_()
        (delta,) = torch.autograd.grad(loss_of_h(r, t, h), h)
        g = torch.einsum("bh,bhp->p", delta, M[:, :H])
        out.append([c.reshape(p.shape) for c, p in zip(g.split([p.numel() for p in params]), params)])
    return out


@pytest.mark.parametrize("leak", [1.0, 0.5])
def test_snap1_is_exact_for_a_diagonal_vanilla_recurrence(leak):
    cell = make_cell("vanilla", leak=leak)
    with torch.no_grad():
        cell.weight_hh.copy_(torch.diag(torch.diagonal(cell.weight_hh)))
    xs, r = inputs(3), readout_vectors(5)
    if leak == 1.0:
        ref = bptt_reference(cell, "vanilla", xs, r)
    else:
        ref = run_learner(OnlineLearner(cell, "full"), xs, r)
        cell.zero_grad()
    assert_same(run_learner(OnlineLearner(cell, "snap1"), xs, r), ref, tol=1e-12)


def diagonal_step(params, s, x):
    """s' = tanh(w ⊙ s + U x + b): a diagonal recurrence none of the closed forms cover."""
    return torch.tanh(params["w"] * s + params["U"] @ x + params["b"])


@pytest.mark.parametrize("fixed", [False, True])
def test_snap1_is_exact_for_a_diagonal_functional_cell(fixed):
    g = torch.Generator().manual_seed(3)
    params = {"w": torch.randn(4, generator=g, dtype=torch.float64),
              "U": torch.randn(4, 3, generator=g, dtype=torch.float64),
              "b": torch.randn(4, generator=g, dtype=torch.float64)}
    cell = FunctionalCell(diagonal_step, params, input_size=3, state_size=4)
    names = list(params)
    plist = [p.detach().clone().requires_grad_() for p in cell.transported_parameters()]

    def step(ps, s, x):  # batched by a loop, independent of the library's vmap
        return torch.stack([diagonal_step(dict(zip(names, ps)), s[b], x[b]) for b in range(s.shape[0])])

    xs, r = inputs(3), readout_vectors(4)
    ref = bptt_per_step_grads(step, plist, xs, lambda t, s: loss_of_h(r, t, s),
                              torch.zeros(B, 4, dtype=torch.float64))
    options = {"pattern": detect_pattern(cell)} if fixed else {}
    learner = OnlineLearner(cell, "snap1", **options)
    assert_same(run_learner(learner, xs, r), ref, tol=1e-12)
    # the pattern found from the stream is the structural one: row i meets w_i, U[i, :], b_i
    unit = torch.cat([torch.arange(4), torch.arange(12) // 3, torch.arange(4)])
    structural = torch.arange(4).unsqueeze(1) == unit.unsqueeze(0)
    assert torch.equal(learner.transport_state.pattern[0], structural)


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_snap1_equals_its_dense_definition(kind):
    cell = make_cell(kind)
    step, params = torch_params(cell, kind)
    xs, r = inputs(3)[:6], readout_vectors(5)
    ref = masked_rtrl_reference(step, params, xs, r, cell.hidden_size, unit_local_mask(cell))
    assert_same(run_learner(OnlineLearner(cell, "snap1"), xs, r), ref, tol=1e-12)
    if kind == "lstm":  # the strict nonzero pattern of Ī, through the dense path
        cell.zero_grad()
        strict = unit_local_mask(cell, strict=True)
        assert torch.equal(detect_pattern(cell), strict)
        ref = masked_rtrl_reference(step, params, xs, r, cell.hidden_size, strict)
        assert_same(run_learner(OnlineLearner(cell, "snap1", pattern=strict), xs, r), ref, tol=1e-12)


def test_snap1_pattern_of_the_wrong_shape_is_named():
    with pytest.raises(ConfigurationError, match=r"pattern must be a bool tensor of shape \(N, P\) = \(5, 50\)"):
        OnlineLearner(make_cell("vanilla"), "snap1", pattern=torch.ones(3, 3, dtype=torch.bool))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_left_product_equals_dense_product(kind):
    cell = make_cell(kind)
    g = torch.Generator().manual_seed(1)
    s = torch.randn(1, 2, cell.state_size, generator=g, dtype=torch.float64)
    x = torch.randn(1, 2, 3, generator=g, dtype=torch.float64)
    immediate = cell.step_with_derivatives(cell.stacked_parameters(), s, x).immediate
    v = torch.randn(1, 2, cell.state_size, generator=g, dtype=torch.float64)
    assert rel_err(immediate.left_product(v), torch.einsum("ebn,ebnp->ebp", v, immediate.dense())) < 1e-13


# -- the gradient shadow -----------------------------------------------------------------

def shadow_run(cell, rule, steps=T):
    learner = OnlineLearner(cell, "shadow", rule=rule)
    run_learner(learner, inputs(cell.input_size)[:steps], readout_vectors(cell.hidden_size))
    return learner.transport_state.history


@pytest.mark.parametrize("kind", ["vanilla", "lstm"])
@pytest.mark.parametrize("rule", ["full", "sparse-row", "sparse-column"])
def test_shadow_cosine_is_one_for_exact_rules(kind, rule):
    cell = make_cell(kind)
    N = cell.state_size
    obj = Full() if rule == "full" else Sparse(k=N, granularity=rule.split("-")[1])
    history = shadow_run(cell, obj)
    assert history.cosine.shape == (T, 1) and torch.equal(history.steps, torch.arange(1, T + 1))
    assert (history.cosine - 1).abs().max() < 1e-12
    assert (history.norm_ratio - 1).abs().max() < 1e-12


def test_shadow_records_what_two_separate_runs_give():
    cell = make_cell("gru")
    xs, r = inputs(3), readout_vectors(5)
    imm = run_learner(OnlineLearner(cell, "immediate"), xs, r)
    cell.zero_grad()
    full = run_learner(OnlineLearner(cell, "full"), xs, r)
    cell.zero_grad()
    history = shadow_run(cell, "immediate")
    for t in range(T):
        a = torch.cat([g.flatten() for g in imm[t]])
        b = torch.cat([g.flatten() for g in full[t]])
        assert abs(float(history.cosine[t, 0]) - float(a @ b / (a.norm() * b.norm()))) < 1e-12
        assert abs(float(history.norm_ratio[t, 0]) - float(a.norm() / b.norm())) < 1e-12
    # at step 1 M = Ī for every rule; afterwards immediate differs from full
    assert abs(float(history.cosine[0, 0]) - 1) < 1e-12
    assert float(history.cosine[1:].max()) < 1 - 1e-6


def test_shadow_does_not_change_learning_and_logs_per_member():
    cells = [make_cell("vanilla", seed=s) for s in range(2)]
    xs = inputs(3)
    runs = []
    for transport in [{"transport": "snap1"}, {"transport": "shadow", "rule": "snap1"}]:
        cell = stack_cells(cells)
        torch.manual_seed(0)
        readout = StackedLinear(2, 5, 1, dtype=torch.float64)
        learner = OnlineLearner(cell, **transport)
        opt = torch.optim.Adam([*learner.parameters(), *readout.parameters()], lr=0.05)
        for t in range(T):
            learner.backward(readout(learner.step(xs[t])).pow(2).sum())
            opt.step()
            opt.zero_grad()
        runs.append((cell, learner))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0].parameters(), runs[1][0].parameters()))
    history = runs[1][1].transport_state.history
    assert history.cosine.shape == (T, 2) and bool((history.cosine[1:] < 1).all())
    saved = runs[1][1].state_dict()
    twin = OnlineLearner(stack_cells(cells), "shadow", rule="snap1")
    twin.load_state_dict(saved)
    assert torch.equal(twin.transport_state.history.cosine, history.cosine)


def test_shadow_options_are_checked():
    with pytest.raises(ConfigurationError, match="the shadow needs the rule to learn with"):
        Shadowed()
    with pytest.raises(ConfigurationError, match="'tbptt' learns through autograd's graph"):
        Shadowed(rule="tbptt")
    with pytest.raises(ConfigurationError, match="UORO's epsilon must be > 0"):
        OnlineLearner(make_cell("vanilla"), "uoro", epsilon=0.0)


# -- Jacobian spectra --------------------------------------------------------------------

@pytest.mark.parametrize("kind", CELL_KINDS)
def test_spectra_match_svd_of_autodiff_jacobians(kind):
    cell = make_cell(kind)
    step, params = torch_params(cell, kind)
    xs = inputs(3)[:6]
    spectra = jacobian_spectra(cell, xs)
    assert spectra.singular_values.shape == (6, 1, B, cell.state_size)
    s = torch.zeros(B, cell.state_size, dtype=torch.float64)
    for t in range(6):
        for b in range(B):
            J = jacrev(lambda ss: step(params, ss, xs[t, b]))(s[b])
            sv = torch.linalg.svdvals(J)
            assert rel_err(spectra.singular_values[t, 0, b], sv) < 1e-12
            assert abs(float(spectra.condition[t, 0, b]) - float(torch.linalg.cond(J))) < 1e-9 * float(torch.linalg.cond(J))
            p = [float(v / sv.sum()) for v in sv]
            r_eff = math.exp(-sum(q * math.log(q) for q in p if q > 0))
            assert abs(float(spectra.effective_rank[t, 0, b]) - r_eff) < 1e-12
            assert int(spectra.numerical_rank[t, 0, b]) == int(torch.linalg.matrix_rank(J))
        s = step(params, s, xs[t])


def test_spectra_count_a_rank_deficient_recurrence_and_start_from_the_learner():
    cell = make_cell("vanilla", n=6)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # W_hh of rank 2: J = diag(φ')·W_hh has rank 2
        cell.weight_hh.copy_(torch.randn(6, 2, generator=g, dtype=torch.float64)
                             @ torch.randn(2, 6, generator=g, dtype=torch.float64))
    learner = OnlineLearner(cell, "immediate")
    xs = inputs(3)
    for t in range(3):
        learner.step(xs[t])
    state = learner.state.clone()
    spectra = jacobian_spectra(learner, xs[3:6])
    assert bool((spectra.numerical_rank == 2).all())
    assert bool((spectra.condition > 1e12).all())
    assert bool((spectra.effective_rank < 2 + 1e-9).all() & (spectra.effective_rank > 1).all())
    assert torch.equal(learner.state, state)  # not touched
    from_cell = jacobian_spectra(cell, xs[3:6], state=state)
    assert torch.equal(from_cell.singular_values, spectra.singular_values)
    summary = spectra.summary()
    assert summary["numerical_rank_min"] == 2 and summary["full_rank_fraction"] == 0.0
    with pytest.raises(InputError, match=r"the stream must be a tensor of shape \(T, 3\) or \(T, B, 3\)"):
        jacobian_spectra(cell, torch.zeros(4, 2, dtype=torch.float64))
