"""The registered operators ``sparse_rtrl::gather_rows_`` / ``gather_columns_``.

Each must give bit for bit what the eager functions of ``kernels`` give (the same code, now
behind the dispatcher), trace under ``torch.compile(fullgraph=True)`` with the same result,
pass ``torch.library.opcheck``, and keep working with the compiled kernels switched off.
The streaming stores of the column kernel (an M larger than the cache) are checked here to
change no bit either.
"""

import itertools

import pytest
import torch

from sparse_rtrl.transport import _cpu_kernels, kernels

OPS = torch.ops.sparse_rtrl
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
SHAPES = [(1, 1, 5, 3), (2, 3, 7, 101), (3, 2, 16, 777), (1, 2, 33, 2500)]  # E, B, N, P


def case(seed, dtype, E, B, N, P, k):
    """M, weight, row sources, column sources S, diagonal for one random product."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(E, B, N, P, generator=g, dtype=dtype),
            torch.randn(E, B, N, k, generator=g, dtype=dtype),
            torch.rand(E, B, N, N, generator=g).argsort(-1)[..., :k],
            torch.rand(E, B, N, generator=g).argsort(-1)[..., :k],
            torch.randn(E, B, N, generator=g, dtype=dtype))


def cases():
    for dtype, (E, B, N, P) in itertools.product(DTYPES, SHAPES):
        for k in sorted({0, 1, min(4, N), N // 2, N}):  # N // 2 and N: the dense route of the rows
            yield (dtype, E, B, N, P, k), case(E + N + k, dtype, E, B, N, P, k)


def assert_same_bits(what, M, *runs):
    """Every run (in place on its own copy of M) leaves the same bits."""
    outs = []
    for run in runs:
        out = M.clone()
        run(out)
        outs.append(out)
    assert all(torch.equal(outs[0], out) for out in outs[1:]), what


def test_the_operators_equal_the_eager_functions_bit_for_bit():
    for what, (M, weight, index, columns, diagonal) in cases():
        for d in (None, diagonal):
            assert_same_bits(what, M, lambda out: kernels.gather_columns_(columns, weight, out, d),
                             lambda out: OPS.gather_columns_(columns, weight, out, d))
        assert_same_bits(what, M, lambda out: kernels.gather_rows_(index, weight, out),
                         lambda out: OPS.gather_rows_(index, weight, out))


@pytest.mark.skipif(_cpu_kernels.get() is None, reason="the compiled kernels are not available")
def test_streaming_stores_change_no_bit(monkeypatch):
    for what, (M, weight, _, columns, _) in cases():
        a, b = M.clone(), M.clone()
        kernels.gather_columns_(columns, weight, a)
        monkeypatch.setattr(kernels, "STREAM_BYTES", 0)  # stream every M, however small
        kernels.gather_columns_(columns, weight, b)
        monkeypatch.undo()
        assert torch.equal(a, b), what


def step(columns, index, weight, M_rows, M_cols, diagonal):
    """A small traced function around both operators (through the kernels' functions)."""
    kernels.gather_rows_(index, weight, M_rows)
    kernels.gather_columns_(columns, 2.0 * weight, M_cols, diagonal)
    return M_rows.sum(-1) + M_cols.sum(-1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_operators_trace_under_torch_compile_fullgraph(dtype):
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    for k in (1, 4):
        M, weight, index, columns, diagonal = case(k, dtype, 2, 3, 16, 777, k)
        eager = [M.clone(), M.clone()]
        traced = [M.clone(), M.clone()]
        out_eager = step(columns, index, weight, *eager, diagonal)
        out_traced = compiled(columns, index, weight, *traced, diagonal)
        assert torch.equal(eager[0], traced[0]) and torch.equal(eager[1], traced[1])  # M, in place
        torch.testing.assert_close(out_traced, out_eager, rtol=1e-4, atol=1e-3)  # inductor sums its own way


def test_opcheck_passes():
    M, weight, index, columns, diagonal = case(0, torch.float64, 2, 3, 7, 101, 3)
    for op, args in [(OPS.gather_rows_.default, (index, weight, M.clone())),
                     (OPS.gather_columns_.default, (columns, weight, M.clone(), None)),
                     (OPS.gather_columns_.default, (columns, weight, M.clone(), diagonal))]:
        torch.library.opcheck(op, args)


def test_the_operators_fall_back_to_pure_torch_without_the_kernels(monkeypatch):
    """SPARSE_RTRL_NO_EXTENSION=1: the operators run the pure-torch paths (the references)."""
    monkeypatch.setenv("SPARSE_RTRL_NO_EXTENSION", "1")
    assert not kernels.compiled_for(torch.zeros(1))
    for what, (M, weight, index, columns, diagonal) in cases():
        assert_same_bits(what, M, lambda out: OPS.gather_columns_(columns, weight, out, diagonal),
                         lambda out: kernels.gather_columns_torch_(columns, weight, out, diagonal))
        assert_same_bits(what, M, lambda out: OPS.gather_rows_(index, weight, out),  # torch: gather or dense
                         lambda out: kernels.gather_rows_impl(index, weight, out, compiled=False))


@pytest.mark.skipif(_cpu_kernels.get() is None, reason="the compiled kernels are not available")
@pytest.mark.parametrize("kind", ["VanillaRNN", "GRU", "LSTM"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_immediate_term_folded_into_the_column_kernel_changes_no_bit(kind, dtype, monkeypatch):
    """The compiled column kernel adds a unit-local Ī in its own pass: bit for bit the product
    followed by ``add_to_dense``, with and without the diagonal and streaming stores, in
    column blocks that cut Ī's row segments (E = 2 members, B = 3 streams)."""
    import sparse_rtrl.cells as cells
    from sparse_rtrl import new_ensemble

    cell = new_ensemble(getattr(cells, kind), 2, 3, 6, seed=1).to(dtype)
    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 3, cell.state_size, generator=g, dtype=dtype)
    x = torch.randn(2, 3, 3, generator=g, dtype=dtype)
    with torch.no_grad():
        immediate = cell.step_with_derivatives(cell.stacked_parameters(), s, x, False).immediate
    N, P = cell.state_size, immediate.layout.size
    for k, stream, blocks in itertools.product((1, 4, 5), (False, True), (P, 7, 16)):
        monkeypatch.setattr(kernels, "STREAM_BYTES", 0 if stream else 1 << 62)
        monkeypatch.setattr(kernels, "_balanced", lambda P, width, blocks=blocks: min(P, blocks))
        M, weight, _, columns, diagonal = case(k, dtype, 2, 3, N, P, k)
        delta = torch.randn(2, 3, cell.hidden_size, generator=g, dtype=dtype)  # H < N for the LSTM
        for d in (None, diagonal):
            a, b, c = M.clone(), M.clone(), M.clone()
            kernels.gather_columns_(columns, weight, a, d, immediate)
            kernels.gather_columns_(columns, weight, b, d)
            immediate.add_to_dense(b)
            assert torch.equal(a, b), (k, stream, blocks, d is None)
            # the update and the gradient in one pass: the same M, and g = δ·M[:H] of it
            grad = kernels.gather_columns_gradient_(columns, weight, c, d, immediate, delta)
            assert torch.equal(c, b), (k, stream, blocks, d is None)
            torch.testing.assert_close(grad, kernels.delta_rows(delta, b), rtol=TOL[dtype], atol=TOL[dtype])


def test_a_deferred_column_update_is_applied_before_anything_reads_M(monkeypatch):
    """The learner's column update waits for the gradient's pass; reading M in between
    (influence, state_dict) or stepping again without a gradient applies it first. Each run
    equals the pure-torch one (no kernels, nothing deferred)."""
    from sparse_rtrl import OnlineLearner
    from sparse_rtrl.cells import VanillaRNN

    def run(peek):
        torch.manual_seed(0)
        cell = VanillaRNN(2, 7).double()
        learner = OnlineLearner(cell, "sparse", k=3, granularity="column")
        grads, Ms = [], []
        for t in range(6):
            h = learner.step(torch.full((2,), 0.1 * t, dtype=torch.float64))
            if peek and t % 2:
                Ms.append(learner.state_dict()["_extra_state"]["transport"]["M"])
                Ms.append(learner.influence().clone())
            if t != 3:  # one step with no gradient: the next step applies it
                learner.backward(h.pow(2).sum())
                grads.append(cell.weight_hh.grad.clone())
        return grads, [*Ms, learner.influence().clone()]

    runs = {peek: run(peek) for peek in (False, True)}
    monkeypatch.setenv("SPARSE_RTRL_NO_EXTENSION", "1")
    reference = {peek: run(peek) for peek in (False, True)}
    for peek in (False, True):
        for got, want in zip([*runs[peek][0], *runs[peek][1]], [*reference[peek][0], *reference[peek][1]]):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
