"""Every transport rule × every cell × every input shape a user can pass × float64 and
float32, against an independent oracle computed in float64.

A bug that lives only at B = 1 (a squeeze, a broadcast of a bias, one gradient buffer
handed to two parameters) passes every test that uses B = 2; this suite runs each rule with
x of shape ``(I,)``, ``(1, I)`` and ``(B, I)`` on a solo cell, and ``(I,)``, ``(B, I)``,
``(E, 1, I)`` and ``(E, B, I)`` on an ensemble, and compares the accumulated ``.grad`` step
by step with the rule's definition computed per stream from autodiff J_t and Ī_t of
torch's own cells (or the custom cell's plain step function), to 1e-10 in float64 and 1e-4
in float32 (the oracle then uses the float32 parameters' exact values):

    full        M_t = J_t M_{t−1} + Ī_t          (= BPTT)
    immediate   M_t = Ī_t
    trace λ     M_t = λ M_{t−1} + Ī_t
    snap1       M_t = Π ⊙ (J_t M_{t−1} + Ī_t),   Π the nonzero pattern of Ī
    sparse      M_t = (K_t ⊙ J_t) M_{t−1} + Ī_t, K_t the mask the learner drew (an input)
    shadow      the wrapped rule's gradient
    tbptt W     ∂L_t/∂θ by autograd through the last W steps from the online state

    g_t = Σ_b δ_{t,b} · M_{t,b}[:H],   δ_{t,b} = ∂L_t/∂h_{t,b}.

UORO and KF-RTRL are random estimates: their oracle is their mean, checked at B = 1 in
test_baselines; here each shape must give the same numbers as the solo ``(I,)`` run.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import jacrev

from reference import rel_err
from sparse_rtrl import OnlineLearner, stack_cells
from sparse_rtrl.ensemble import member_cell
from sparse_rtrl.transport import RULES, unsupported_reason

from conftest import CELL_KINDS, make_cell
from test_baselines import unit_local_mask
from test_cells import custom_step, make_custom, torch_step, torch_twin
from test_sparse import rescale_weight

T, B, E = 5, 3, 2
KINDS = [*CELL_KINDS, "custom", "torch-rnn", "torch-lstm"]
SOLO_SHAPES = ["(I,)", "(1,I)", "(B,I)"]
ENSEMBLE_SHAPES = ["(I,)", "(B,I)", "(E,1,I)", "(E,B,I)"]

#: rule name → the options each oracle case runs (every registered rule must appear)
ORACLE_CASES = {
    "full": [{}],
    "immediate": [{}],
    "trace": [{"decay": 0.7}],
    "snap1": [{}],
    "sparse": [{"k": 2, "seed": 4}, {"k": 1, "granularity": "column", "seed": 2, "rescale": True},
               {"k": 2, "selection": "magnitude", "keep_diagonal": True}],
    "shadow": [{"rule": "immediate"}],
    "tbptt": [{"window": 1}, {"window": 3}, {"window": T}],
}
RANDOM_ESTIMATES = {"uoro": [{"seed": 3}], "kf": [{"seed": 5}]}
CASES = [(name, o) for name, opts in sorted(ORACLE_CASES.items()) for o in opts]
RANDOM_CASES = [(name, o) for name, opts in sorted(RANDOM_ESTIMATES.items()) for o in opts]


def case_id(case):
    name, options = case
    return name + "".join(f"-{k}={v}" for k, v in options.items())


def test_every_registered_rule_has_an_oracle_here():
    missing = set(RULES) - set(ORACLE_CASES) - set(RANDOM_ESTIMATES)
    assert not missing, f"add {sorted(missing)} to ORACLE_CASES or RANDOM_ESTIMATES"


# -- cells and their independent step functions -------------------------------------------

def solo_cell(kind, seed=0):
    """The cell handed to the learner: ours, or torch's own (converted, parameters shared)."""
    if kind == "custom":
        return make_custom(seed=seed)
    if kind.startswith("torch-"):
        ours = make_cell(kind[6:].replace("rnn", "vanilla"), seed=seed)
        return torch_twin(ours, kind[6:].replace("rnn", "vanilla"))
    return make_cell(kind, seed=seed)


def independent_step(cell, kind):
    """s' = f(θ, s, x) for one stream, as a function of a parameter list, computed by torch's
    cells (or the custom step) — never by the library's closed forms."""
    if kind == "custom":
        names = ["w", "u", "g"]
        return lambda ps, s, x: custom_step(dict(zip(names, ps)), s, x)
    base = kind[6:].replace("rnn", "vanilla") if kind.startswith("torch-") else kind
    twin = cell if kind.startswith("torch-") else torch_twin(copy.deepcopy(cell).double(), base)
    step = torch_step(copy.deepcopy(twin).double(), base)
    return lambda ps, s, x: step(ps, s.unsqueeze(0), x.unsqueeze(0)).squeeze(0)


def parameters_of(cell):
    """The cell's parameters in float64 (a float32 cell's values, exactly, in float64)."""
    from sparse_rtrl.cells import as_cell

    return [p.detach().clone().double() for p in as_cell(cell).transported_parameters()]


def pattern(kind, cell, step, params, N, I):
    """Π, the nonzero pattern of Ī: unit-local for torch's cells, probed for the custom one."""
    if kind != "custom":
        base = kind[6:].replace("rnn", "vanilla") if kind.startswith("torch-") else kind
        return unit_local_mask(make_cell(base) if kind.startswith("torch-") else cell)
    g = torch.Generator().manual_seed(123)
    total = 0
    for _ in range(4):
        s = torch.randn(N, generator=g, dtype=torch.float64)
        x = torch.randn(I, generator=g, dtype=torch.float64)
        total = total + derivatives(step, params, s, x)[1].abs()
    return total > 0


def derivatives(step, params, s, x):
    J = jacrev(lambda ss: step(params, ss, x))(s)
    parts = jacrev(lambda *ps: step(list(ps), s, x), argnums=tuple(range(len(params))))(*params)
    return J, torch.cat([q.reshape(s.shape[0], -1) for q in parts], dim=1)


# -- the shapes ------------------------------------------------------------------------------

def layout(shape, ensemble):
    """(members, streams) of the internal run and whether members share the input."""
    members = E if ensemble else 1
    streams = {"(I,)": 1, "(1,I)": 1, "(B,I)": B, "(E,1,I)": 1, "(E,B,I)": B}[shape]
    shared = shape in ("(I,)", "(1,I)", "(B,I)")
    return members, streams, shared


def user_input(X, t, shape):
    """x_t as the user passes it, from the canonical ``(T, E, B, I)`` stream."""
    return {"(I,)": lambda: X[t, 0, 0], "(1,I)": lambda: X[t, 0], "(B,I)": lambda: X[t, 0],
            "(E,1,I)": lambda: X[t], "(E,B,I)": lambda: X[t]}[shape]()


def expected_h_shape(shape, ensemble, n):
    if not ensemble:
        return {"(I,)": (n,), "(1,I)": (1, n), "(B,I)": (B, n)}[shape]
    return {"(I,)": (E, n), "(B,I)": (E, B, n), "(E,1,I)": (E, 1, n), "(E,B,I)": (E, B, n)}[shape]


def loss_of(r, t, h):
    """Σ_{e,b} r_{t,e,b}·h_{e,b} + ½|h_{e,b}|²: δ depends on h."""
    return (r[t] * h).sum() + 0.5 * (h**2).sum()


# -- the oracle --------------------------------------------------------------------------------

def oracle(name, options, kind, cells, X, r, masks):
    """Per-step gradient increments ``[t][e][param]`` of the rule's definition, per stream."""
    members, streams = X.shape[1], X.shape[2]
    per_member = []
    for e in range(members):
        step = independent_step(cells[e], kind)
        params = parameters_of(cells[e])
        N, H, I = cell_state_size(cells[e]), cell_hidden_size(cells[e]), X.shape[-1]
        s0 = torch.zeros(N, dtype=torch.float64)
        P = sum(p.numel() for p in params)
        M = torch.zeros(streams, N, P, dtype=torch.float64)
        states = [[s0] for _ in range(streams)]
        Pi = pattern(kind, cells[e], step, params, N, I) if name == "snap1" else None
        out = []
        for t in range(X.shape[0]):
            g = torch.zeros(P, dtype=torch.float64)
            for b in range(streams):
                s, x = states[b][-1], X[t, e, b]
                new_s = step(params, s, x).detach()
                if name == "tbptt":
                    g += truncated_grad(step, params, states[b], X[:, e, b], t, options["window"], r[t, e, b], H)
                else:
                    J, Ib = derivatives(step, params, s, x)
                    M[b] = transported(name, options, J, M[b], Ib, Pi, None if masks is None else masks[t][e, b])
                    h = new_s[:H].clone().requires_grad_()
                    (delta,) = torch.autograd.grad(loss_of(r[:, e, b], t, h), h)
                    g += delta @ M[b, :H]
                states[b].append(new_s)
            out.append(list(g.split([p.numel() for p in params])))
        per_member.append(out)
    return [list(step) for step in zip(*per_member)]


def cell_state_size(cell):
    from sparse_rtrl.cells import as_cell

    return as_cell(cell).state_size


def cell_hidden_size(cell):
    from sparse_rtrl.cells import as_cell

    return as_cell(cell).hidden_size


def transported(name, options, J, M, Ib, Pi, mask):
    rule = options.get("rule", name)
    if rule == "full":
        return J @ M + Ib
    if rule == "immediate":
        return Ib
    if rule == "trace":
        return options["decay"] * M + Ib
    if rule == "snap1":
        return Pi * (J @ M + Ib)
    if rule == "sparse":
        return (J * mask) @ M + Ib
    raise AssertionError(f"no oracle for {rule}")


def truncated_grad(step, params, past, xs, t, window, r_t, H):
    """∂L_t/∂θ through steps t−W+1 … t, starting from the online state s_{t−W} (fixed)."""
    ps = [p.clone().requires_grad_() for p in params]
    start = max(0, t + 1 - window)
    s = past[start]
    for tau in range(start, t + 1):
        s = step(ps, s, xs[tau])
    h = s[:H]
    loss = (r_t * h).sum() + 0.5 * (h**2).sum()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, ps)])


# -- the runs ---------------------------------------------------------------------------------

def run(name, options, kind, shape, ensemble, dtype=torch.float64):
    """Learner increments ``[t][e][param]`` (flattened per member) in ``dtype``, and the
    oracle's, computed in float64 from the same (possibly float32-rounded) parameters."""
    members, streams, shared = layout(shape, ensemble)
    cells = [solo_cell(kind, seed=s).to(dtype) for s in range(members)]
    I, n = cell_input_size(cells[0]), cell_hidden_size(cells[0])
    g = torch.Generator().manual_seed(17)
    X = torch.randn(T, members, streams, I, generator=g, dtype=torch.float64)
    if shared:
        X = X[:, :1].expand(T, members, streams, I).contiguous()
    r = torch.randn(T, members, streams, n, generator=g, dtype=torch.float64)
    if ensemble:
        learner_cell = stack_cells([as_ours(c) for c in cells])
    else:
        learner_cell = cells[0]
    learner = OnlineLearner(learner_cell, name, **options)
    params = learner.cell.transported_parameters()
    increments, masks = [], [] if name == "sparse" else None
    for t in range(T):
        before = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
        h = learner.step(user_input(X, t, shape).to(dtype))
        assert h.shape == expected_h_shape(shape, ensemble, n)
        if masks is not None:
            K = learner.transport.current_mask(learner.transport_state).to(torch.float64)
            masks.append(K * rescale_weight(learner, K.shape[-1]))
        learner.backward(loss_of(r.to(dtype), t, h.reshape(members, streams, n)))
        inc = [(p.grad - b0).double() for p, b0 in zip(params, before)]
        if not ensemble:
            inc = [x.unsqueeze(0) for x in inc]
        increments.append([[x[e].reshape(-1) for x in inc] for e in range(members)])
    reference = oracle(name, options, kind, cells if not ensemble else [member_cell(learner_cell, e) for e in range(members)],
                       X, r, masks)
    return increments, reference


def cell_input_size(cell):
    from sparse_rtrl.cells import as_cell

    return as_cell(cell).input_size


def as_ours(cell):
    from sparse_rtrl.cells import as_cell

    return copy.deepcopy(as_cell(cell))


def supported(name, options, kind):
    return unsupported_reason(name, solo_cell(kind), **options) is None


#: dtype → the tolerance of the learner's increments against the float64 oracle
DTYPES = {torch.float64: 1e-10, torch.float32: 1e-4}


def grid(cases):
    """(case, kind, shape, ensemble, dtype) for every solo and ensemble input shape."""
    out = []
    for dtype in DTYPES:
        tag = "" if dtype == torch.float64 else "-f32"
        for case in cases:
            for kind in KINDS:
                for shape in SOLO_SHAPES:
                    out.append(pytest.param(case, kind, shape, False, dtype, id=f"{case_id(case)}-{kind}-{shape}{tag}"))
                if kind.startswith("torch-"):
                    continue  # torch's cells have no ensemble form; ours stand in for them
                for shape in ENSEMBLE_SHAPES:
                    out.append(pytest.param(case, kind, shape, True, dtype, id=f"{case_id(case)}-{kind}-E{shape}{tag}"))
    return out


def assert_equals_definition(case, kind, shape, ensemble, dtype):
    name, options = case
    if not supported(name, options, kind):
        pytest.skip(f"{name} does not serve {kind}")
    increments, reference = run(name, options, kind, shape, ensemble, dtype)
    for t, (got, want) in enumerate(zip(increments, reference)):
        for e, (ge, we) in enumerate(zip(got, want)):
            for i, (a, b) in enumerate(zip(ge, we)):
                err = rel_err(a, b)
                assert err < DTYPES[dtype], f"step {t}, member {e}, parameter {i}: relative error {err:.2e}"


@pytest.mark.parametrize("case,kind,shape,ensemble,dtype", grid(CASES))
def test_rule_equals_its_definition_for_every_input_shape(case, kind, shape, ensemble, dtype):
    assert_equals_definition(case, kind, shape, ensemble, dtype)


#: products that go through ``kernels.matmul_``: full RTRL, and sparse with k > N/2 (the dense
#: route: K ⊙ J scattered into a matrix) on the suite's N = 5 cells
MATMUL_CASES = [("full", {}), ("sparse", {"k": 4, "seed": 1})]


@pytest.mark.parametrize("case,kind,shape,ensemble,dtype",
                         [p for p in grid(MATMUL_CASES) if p.values[4] == torch.float32])
def test_float32_products_by_onednn_equal_the_definition_for_every_input_shape(case, kind, shape, ensemble,
                                                                                 dtype, monkeypatch):
    """The float32 J·M by oneDNN (taken from N = 64 on; forced here at every N) against the
    same float64 oracle, in every input shape: the route is exact wherever a user reaches it."""
    from sparse_rtrl.transport import kernels, onednn
    if not onednn.usable():
        pytest.skip("torch has no working oneDNN linear op here")
    calls, real = [], onednn.linear
    monkeypatch.setattr(kernels, "ONEDNN_MIN_N", 1)
    monkeypatch.setattr(onednn, "linear", lambda x, w: calls.append(x.shape) or real(x, w))
    assert_equals_definition(case, kind, shape, ensemble, dtype)
    N = as_ours(solo_cell(kind)).state_size
    if case[0] == "full" or case[1]["k"] > kernels.DENSE_FRACTION_COMPILED * N:
        assert calls, "the oneDNN route was not taken"


@pytest.mark.parametrize("case", RANDOM_CASES, ids=case_id)
@pytest.mark.parametrize("kind", ["vanilla", "lstm", "custom"])
def test_random_estimates_give_the_same_numbers_in_every_shape_of_one_stream(case, kind):
    """(I,) and (1, I) are one stream; member e of an ensemble fed (E, 1, I) or a shared (I,)
    is the solo run of member e with seed + e. (Their mean is checked against BPTT at B = 1
    in test_baselines.)"""
    name, options = case
    if not supported(name, options, kind):
        pytest.skip(f"{name} does not serve {kind}")
    cells = [as_ours(solo_cell(kind, seed=s)) for s in range(E)]
    I, n = cells[0].input_size, cells[0].hidden_size
    g = torch.Generator().manual_seed(5)
    X = torch.randn(T, I, generator=g, dtype=torch.float64)
    r = torch.randn(T, n, generator=g, dtype=torch.float64)

    def grads(cell, opts, shape):
        learner = OnlineLearner(cell, name, **opts)
        for t in range(T):
            x = {"(I,)": X[t], "(1,I)": X[t].unsqueeze(0), "(E,1,I)": X[t].expand(E, 1, I)}[shape]
            h = learner.step(x)
            learner.backward(((r[t] * h).sum() + 0.5 * (h**2).sum()))
        return [p.grad.clone() for p in learner.cell.transported_parameters()]

    solo = [grads(copy.deepcopy(c), {**options, "seed": options["seed"] + e}, "(I,)") for e, c in enumerate(cells)]
    for a, b in zip(grads(copy.deepcopy(cells[0]), options, "(1,I)"), solo[0]):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    for shape in ("(I,)", "(E,1,I)"):
        ens = grads(stack_cells([copy.deepcopy(c) for c in cells]), options, shape)
        for e in range(E):
            for a, b in zip(ens, solo[e]):
                assert torch.allclose(a[e], b, rtol=1e-12, atol=1e-14), (shape, e)
