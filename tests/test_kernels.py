"""Every fast path on M equals a plain dense reference: (J masked) @ M.

The kernels of ``sparse_rtrl.transport.kernels`` (and the compiled CPU loops behind them)
rewrite M in place in column blocks; here each is compared, on random shapes (E > 1, B > 1,
k = 0 … N, several blocks), with the product written densely from one-hot matrices. The
pure-torch paths are tested on the CPU too, since they are what runs on CUDA (the row product
there goes to the Triton kernel when triton is installed: tests/test_triton_rows.py).
"""

import itertools
import sys

import pytest
import torch

from sparse_rtrl import OnlineLearner, new_ensemble, settings
from sparse_rtrl.cells import VanillaRNN
from sparse_rtrl.transport import _cpu_kernels, kernels, triton_rows

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def dense_from_rows(index, weight, N):
    """K ⊙ J from kept sources: Σ_r weight[..., r]·onehot(index[..., r]) (duplicates add)."""
    onehot = torch.nn.functional.one_hot(index, N).to(weight.dtype)  # (E, B, N, k, N)
    return (onehot * weight.unsqueeze(-1)).sum(-2)


def dense_from_columns(columns, weight, N, diagonal=None):
    """J[:, S] placed in an N×N matrix, plus diag(diagonal)."""
    onehot = torch.nn.functional.one_hot(columns, N).to(weight.dtype)  # (E, B, k, N)
    A = weight @ onehot  # (E, B, N, N): column S_r gets weight[:, r]
    if diagonal is not None:
        A = A + torch.diag_embed(diagonal)
    return A


def random_case(seed, dtype, device, E, B, N, P, k):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(E, B, N, P, generator=g, dtype=dtype).to(device)
    weight = torch.randn(E, B, N, k, generator=g, dtype=dtype).to(device)
    index = torch.rand(E, B, N, N, generator=g).argsort(-1)[..., :k].to(device)
    columns = torch.rand(E, B, N, generator=g).argsort(-1)[..., :k].to(device)
    diagonal = torch.randn(E, B, N, generator=g, dtype=dtype).to(device)
    return M, weight, index, columns, diagonal


SHAPES = [  # E, B, N, P
    (1, 1, 1, 1),
    (1, 1, 5, 3),
    (2, 3, 7, 101),
    (3, 2, 16, 777),
    (1, 2, 33, 2500),
]


def ks(N):
    return sorted({0, 1, min(2, N), min(4, N), N // 2, N - 1 if N > 1 else N, N})


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few columns, so every kernel runs many blocks and a ragged last one."""
    monkeypatch.setattr(kernels, "SCRATCH_BYTES", 256)
    monkeypatch.setattr(kernels, "DEVICE_SCRATCH_BYTES", 256)
    monkeypatch.setattr(kernels, "ROW_BLOCK_BYTES", 64)
    monkeypatch.setattr(kernels, "ROW_BLOCK_MIN_WIDTH", 1)
    monkeypatch.setattr(kernels, "COLUMN_BLOCK_BYTES", 64)
    monkeypatch.setattr(kernels, "_balanced", lambda P, width: min(P, 5))


def row_paths():
    paths = [("dispatch", kernels.gather_rows_), ("torch", kernels.gather_rows_torch_)]
    if _cpu_kernels.get() is not None:
        def compiled(index, weight, M):
            E, B, N, P = M.shape
            k = index.shape[-1]
            _cpu_kernels.rows(index.reshape(E * B, N, k).contiguous(), weight.reshape(E * B, N, k).contiguous(),
                              M.view(E * B, N, P), 3)
        paths.append(("compiled", compiled))
    return paths


def column_paths():
    paths = [("dispatch", kernels.gather_columns_), ("torch", kernels.gather_columns_torch_)]
    if _cpu_kernels.get() is not None:
        def compiled(columns, weight, M, diagonal=None, stream=False):
            E, B, N, P = M.shape
            k = columns.shape[-1]
            _cpu_kernels.columns(columns.reshape(E * B, k).contiguous(), weight.reshape(E * B, N, k).contiguous(),
                                 M.view(E * B, N, P),
                                 None if diagonal is None else diagonal.reshape(E * B, N).contiguous(), 3,
                                 stream=stream)
        paths.append(("compiled", compiled))
        # streaming stores (used for an M larger than the cache), forced on small shapes
        paths.append(("compiled", lambda *args: compiled(*args, stream=True)))
    return paths


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("blocks", ["default", "small"])
def test_row_gather_equals_masked_dense_product(device, dtype, blocks, request):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    for (E, B, N, P), seed in itertools.product(SHAPES, [0, 1]):
        for k in ks(N):
            M, weight, index, _, _ = random_case(seed + 10 * k, dtype, device, E, B, N, P, k)
            expected = dense_from_rows(index, weight, N) @ M
            for name, fn in row_paths():
                if name == "compiled" and device != "cpu":
                    continue
                out = M.clone()
                fn(index, weight, out)
                assert rel_err(out, expected) < TOL[dtype], f"{name} E={E} B={B} N={N} P={P} k={k}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("blocks", ["default", "small"])
@pytest.mark.parametrize("with_diagonal", [False, True])
def test_column_gather_equals_masked_dense_product(device, dtype, blocks, with_diagonal, request):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    for (E, B, N, P), seed in itertools.product(SHAPES, [0, 1]):
        for k in ks(N):
            M, weight, _, columns, diagonal = random_case(seed + 10 * k, dtype, device, E, B, N, P, k)
            diagonal = diagonal if with_diagonal else None
            expected = dense_from_columns(columns, weight, N, diagonal) @ M
            for name, fn in column_paths():
                if name == "compiled" and device != "cpu":
                    continue
                out = M.clone()
                fn(columns, weight, out, diagonal)
                assert rel_err(out, expected) < TOL[dtype], f"{name} E={E} B={B} N={N} P={P} k={k}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("blocks", ["default", "small"])
def test_matmul_equals_dense_product(device, dtype, blocks, request):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    for (E, B, N, P), seed in itertools.product(SHAPES, [0, 1]):
        M, _, _, _, _ = random_case(seed, dtype, device, E, B, N, P, 0)
        A = torch.randn(E, B, N, N, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)
        expected = A @ M
        kernels.matmul_(A, M)
        assert rel_err(M, expected) < TOL[dtype]


@pytest.mark.parametrize("route", ["oneDNN", "BLAS"])
def test_matmul_routes_equal_a_float64_chain(route, monkeypatch):
    """J·M in float32 by oneDNN (every N forced through it) and by the blocked BLAS path,
    applied four times in place to the same M (a product that cached its operand by address
    would go stale), against the float64 chain of products; non-contiguous J too."""
    from sparse_rtrl.transport import onednn
    if route == "oneDNN" and not onednn.onednn_works():
        pytest.skip("torch has no working oneDNN linear op here")
    monkeypatch.setattr(kernels, "ONEDNN_MIN_N", 1 if route == "oneDNN" else 10**9)
    for (E, B, N, P), seed in itertools.product(SHAPES + [(2, 1, 64, 4224), (1, 1, 96, 1000)], [0, 1]):
        g = torch.Generator().manual_seed(seed)
        M = torch.randn(E, B, N, P, generator=g)
        reference = M.double()
        for step in range(4):
            A = torch.randn(E, B, N, N, generator=g) / N ** 0.5
            if step % 2:
                A = A.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, other strides
            reference = A.double() @ reference
            kernels.matmul_(A, M)
        assert kernels._by_onednn(M) == (route == "oneDNN")
        assert rel_err(M.double(), reference) < 1e-5, (E, B, N, P)


def test_matmul_by_onednn_only_where_it_applies(monkeypatch):
    """The route is taken for float32 CPU M with 64 ≤ N ≤ 192 and one stream's M ≤ 16 MB, never
    with oneDNN switched off, and a J of another dtype is refused as torch.bmm refuses it."""
    from sparse_rtrl.transport import onednn
    if not onednn.onednn_works():
        pytest.skip("torch has no working oneDNN linear op here")
    assert kernels._by_onednn(torch.zeros(2, 1, 64, 100))
    assert not kernels._by_onednn(torch.zeros(2, 1, 63, 100))
    assert not kernels._by_onednn(torch.zeros(1, 1, 193, 100))
    assert not kernels._by_onednn(torch.zeros(1, 1, 128, 40000))  # 20 MB per stream
    assert not kernels._by_onednn(torch.zeros(2, 1, 64, 100, dtype=torch.float64))
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert not kernels._by_onednn(torch.zeros(2, 1, 64, 100))
    monkeypatch.undo()
    assert torch.backends.mkldnn.enabled
    M = torch.zeros(1, 1, 64, 100)
    with pytest.raises(RuntimeError):
        kernels.matmul_(torch.zeros(1, 1, 64, 64, dtype=torch.float64), M)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("blocks", ["default", "small"])
def test_gradient_reads_the_first_rows_of_M(device, dtype, blocks, monkeypatch):
    """g = Σ_b δ_b·M_b[:H] by delta_rows (compiled or einsum) equals a plain loop over b, h."""
    if blocks == "small":
        monkeypatch.setattr(kernels, "GRADIENT_BLOCK_BYTES", 40)  # 5 columns of float64 a block
    for (E, B, N, P), seed in itertools.product(SHAPES, [0, 1]):
        M, _, _, _, _ = random_case(seed, dtype, device, E, B, N, P, 0)
        for H in sorted({1, max(1, N // 2), N}):
            delta = torch.randn(E, B, H, generator=torch.Generator().manual_seed(seed + H), dtype=dtype).to(device)
            expected = sum(delta[:, b, h, None] * M[:, b, h] for b in range(B) for h in range(H))
            assert rel_err(kernels.delta_rows(delta, M), expected) < TOL[dtype], f"E={E} B={B} N={N} P={P} H={H}"


def test_dense_route_of_the_row_gather_is_taken_for_large_k(monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "matmul_", lambda A, M: calls.append(A.shape))
    M, weight, index, _, _ = random_case(0, torch.float64, "cpu", 1, 2, 8, 10, 8)
    kernels.gather_rows_(index, weight, M)
    assert calls == [(1, 2, 8, 8)]
    M, weight, index, _, _ = random_case(0, torch.float64, "cpu", 1, 2, 8, 10, 1)
    kernels.gather_rows_(index, weight, M)
    assert len(calls) == 1


def test_without_a_compiler_the_pure_torch_paths_are_used(monkeypatch, tmp_path):
    """With no compiler the library still works (pure torch), and says why."""
    monkeypatch.setattr(_cpu_kernels, "_lib", None)
    monkeypatch.setattr(_cpu_kernels, "_tried", False)
    monkeypatch.setattr(_cpu_kernels, "reason", None)
    monkeypatch.setenv("CC", "/nonexistent/compiler")
    monkeypatch.setenv("SPARSE_RTRL_CACHE", str(tmp_path))  # nothing cached there either
    monkeypatch.delenv("SPARSE_RTRL_NO_EXTENSION", raising=False)
    with pytest.warns(RuntimeWarning, match="sparse-rtrl build-kernels"):  # said once, with the fix
        assert _cpu_kernels.get() is None
    assert _cpu_kernels.reason
    M, weight, index, columns, diagonal = random_case(3, torch.float64, "cpu", 2, 2, 9, 50, 3)
    expected = dense_from_rows(index, weight, 9) @ M
    out = M.clone()
    kernels.gather_rows_(index, weight, out)
    assert rel_err(out, expected) < 1e-12
    expected = dense_from_columns(columns, weight, 9, diagonal) @ M
    kernels.gather_columns_(columns, weight, M, diagonal)
    assert rel_err(M, expected) < 1e-12


def test_environment_switch_disables_the_compiled_kernels(monkeypatch):
    monkeypatch.setattr(_cpu_kernels, "reason", None)
    monkeypatch.setenv("SPARSE_RTRL_NO_EXTENSION", "1")
    assert _cpu_kernels.get() is None
    assert not _cpu_kernels.usable(torch.zeros(1))
    assert "SPARSE_RTRL_NO_EXTENSION" in _cpu_kernels.reason


def test_the_triton_row_kernel_is_for_cuda_with_triton_only(monkeypatch):
    """CPU tensors never take it (the CPU paths stay as they are); CUDA tensors do when triton
    is importable and SPARSE_RTRL_NO_TRITON is not set, and numeric_path says so."""
    monkeypatch.delenv("SPARSE_RTRL_NO_TRITON", raising=False)
    monkeypatch.setattr(triton_rows, "importable", lambda: True)
    assert not triton_rows.available("cpu") and not triton_rows.available(torch.device("meta"))
    assert triton_rows.available("cuda") and kernels.numeric_path("cuda") == "torch+triton"
    assert kernels.numeric_path("cpu") != "torch+triton"
    monkeypatch.setenv("SPARSE_RTRL_NO_TRITON", "1")
    assert not triton_rows.available("cuda") and kernels.numeric_path("cuda") == "torch"
    monkeypatch.delenv("SPARSE_RTRL_NO_TRITON")
    with settings.using(triton=False):  # the Python form
        assert not triton_rows.available("cuda")
    monkeypatch.setattr(triton_rows, "importable", lambda: False)
    assert not triton_rows.available("cuda") and kernels.numeric_path("cuda") == "torch"


def test_the_triton_launcher_without_triton_says_what_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton now raises ImportError
    monkeypatch.setitem(sys.modules, "triton.language", None)
    triton_rows._kernel.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="needs the triton package"):
            triton_rows.gather_rows_triton_(torch.zeros(1, 1, 2, 1, dtype=torch.int64), torch.ones(1, 1, 2, 1),
                                            torch.ones(1, 1, 2, 3))
    finally:
        triton_rows._kernel.cache_clear()  # a later call (with triton) builds the kernel afresh


def test_a_failing_triton_kernel_falls_back_to_torch_once(monkeypatch):
    """A broken install or a failed compile or launch: the row product is still right (pure
    torch), the failure is said once, and the kernel is not tried again in this process."""
    monkeypatch.setattr(triton_rows, "broken", None)
    monkeypatch.setattr(triton_rows, "available", lambda device: triton_rows.broken is None)
    calls = []

    def failing(*args):
        calls.append(1)
        raise RuntimeError("out of resources: shared memory")
    monkeypatch.setattr(triton_rows, "gather_rows_triton_", failing)
    M, weight, index, _, _ = random_case(8, torch.float64, "cpu", 2, 1, 9, 30, 2)
    expected = dense_from_rows(index, weight, 9) @ M
    with pytest.warns(RuntimeWarning, match="out of resources"):
        kernels.gather_rows_impl(index, weight, M, compiled=False)
    assert rel_err(M, expected) < 1e-12
    assert "out of resources" in triton_rows.broken
    kernels.gather_rows_impl(index, weight, M, compiled=False)  # no second try, no second warning
    assert len(calls) == 1


def test_non_contiguous_inputs_are_made_contiguous():
    M, weight, index, columns, diagonal = random_case(4, torch.float64, "cpu", 2, 3, 6, 40, 3)
    w_t = weight.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    expected = dense_from_rows(index, weight, 6) @ M
    out = M.clone()
    kernels.gather_rows_(index.transpose(0, 1).contiguous().transpose(0, 1), w_t, out)
    assert rel_err(out, expected) < 1e-12
    expected = dense_from_columns(columns, weight, 6, diagonal) @ M
    kernels.gather_columns_(columns, w_t, M, diagonal.transpose(0, 1).contiguous().transpose(0, 1))
    assert rel_err(M, expected) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("opts", [
    dict(k=3), dict(k=3, granularity="column"), dict(k=2, keep_diagonal=True, rescale=True),
    dict(k=2, granularity="column", keep_diagonal=True), dict(k=12), dict(k=0),
], ids=str)
def test_learner_with_and_without_compiled_kernels_agree(dtype, opts, monkeypatch):
    """An ensemble with B > 1 run through the dispatching kernels and through pure torch."""
    def run():
        cell = new_ensemble(VanillaRNN, 2, 3, 12, seed=5).to(dtype)
        learner = OnlineLearner(cell, "sparse", seed=1, **opts)
        xs = torch.randn(6, 2, 2, 3, generator=torch.Generator().manual_seed(2), dtype=dtype)
        for x in xs:
            h = learner.step(x)
            learner.backward(h.pow(2).sum())
        return learner.influence().clone(), [p.grad.clone() for p in cell.parameters()]

    M_fast, g_fast = run()
    monkeypatch.setenv("SPARSE_RTRL_NO_EXTENSION", "1")
    M_ref, g_ref = run()
    assert rel_err(M_fast, M_ref) < 10 * TOL[dtype]
    for a, b in zip(g_fast, g_ref):
        assert rel_err(a, b) < 10 * TOL[dtype]


@pytest.mark.parametrize("where", ["state", "jacobian", "d", "u", "big"])
def test_fused_finite_check_names_the_same_culprit(where):
    """The learner checks s_t, J_t and Ī_t with one fused reduction; when it fails, the
    per-quantity checks name what is not finite, as before. Huge finite values pass."""
    from sparse_rtrl import DivergenceError
    from sparse_rtrl.cells.base import StepDerivatives

    cell = VanillaRNN(2, 5).double()
    learner = OnlineLearner(cell, "full")
    learner.step(torch.ones(2, dtype=torch.float64))
    x = torch.ones(1, 1, 2, dtype=torch.float64)
    with torch.no_grad():
        d = cell.step_with_derivatives(cell.stacked_parameters(), learner._state, x, True)
    state, J, imm = d.state.clone(), d.jacobian.clone(), d.immediate
    imm.d = [t.clone() for t in imm.d]
    imm.u = [None if t is None else t.clone() for t in imm.u]
    target = {"state": state, "jacobian": J, "d": imm.d[1], "u": imm.u[1], "big": J}[where]
    target.view(-1)[1] = 1e300 if where == "big" else float("nan")  # 1e300² overflows the 2-norm
    derivs = StepDerivatives(state, J, imm)
    if where == "big":
        learner._check_step(derivs)
        return
    what = {"state": "state", "jacobian": "Jacobian J_t", "d": "immediate influence", "u": "immediate influence"}
    with pytest.raises(DivergenceError, match=what[where]):
        learner._check_step(derivs)


def test_huge_finite_inputs_losses_and_gradients_pass_the_finite_checks():
    """The fused check's 2-norm overflows at |x| ~ 1e155 (float64); that must not raise."""
    from sparse_rtrl.contract import all_finite as _all_finite

    big = torch.tensor([1e200, -1e200, 1.0], dtype=torch.float64)
    assert _all_finite([big, torch.ones(3)])
    assert not _all_finite([big, torch.tensor([0.0, float("inf")])])
    assert not _all_finite([torch.tensor([float("nan")])])
    assert _all_finite([torch.zeros(0, 3)])
    cell = VanillaRNN(1, 3).double()
    learner = OnlineLearner(cell, "full")
    h = learner.step(torch.tensor([1e200], dtype=torch.float64))  # saturates tanh: finite state
    learner.backward(h.sum() * 1e200)
