"""The Triton row kernel (:mod:`sparse_rtrl.transport.triton_rows`) equals a dense reference.

M[i] ← Σ_r weight[i, r]·M[index[i, r]] is checked against (K ⊙ J) @ M, with K ⊙ J written
from one-hot matrices and the product taken in float64. With CUDA the kernel runs on the GPU;
without it, on CPU tensors through Triton's interpreter (``TRITON_INTERPRET=1``, set here
before triton is imported, and read when the kernel is first compiled). The interpreter runs a
program's reads before its stores in one thread, so it cannot show a missing barrier between
the threads of a GPU program; only a GPU run can. Skipped without triton (CI).
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from sparse_rtrl.transport import kernels, triton_rows  # noqa: E402
from test_kernels import SHAPES as KERNEL_SHAPES  # noqa: E402
from test_kernels import random_case as kernel_case  # noqa: E402

#: the interpreter is a process-wide mode, so one device per run: the GPU when there is one
DEVICES = ["cuda"] if torch.cuda.is_available() else ["cpu"]
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}

SHAPES = KERNEL_SHAPES + [  # E, B, N, P: the CPU kernels' shapes and wide tiles
    (1, 2, 256, 5),
    (2, 1, 256, 40),
    (1, 1, 1024, 20),  # the widest tile here: 1024 × 16
]


@pytest.fixture
def small_tiles(monkeypatch):
    """Blocks of MIN_BLOCK columns whatever N: many programs per stream and a ragged last one."""
    monkeypatch.setattr(triton_rows, "TILE_ELEMENTS", 1)


def ks(N):
    if N > 256:  # the widest tile; large k is covered at N ≤ 256, and costs minutes here
        return [1, 4, 16]
    return sorted({k for k in (1, 2, 4, N // 2, N - 1, N) if 1 <= k <= N})


def random_case(seed, dtype, device, E, B, N, P, k):
    M, weight, index, _, _ = kernel_case(seed, dtype, device, E, B, N, P, k)
    return M, weight, index


def reference(index, weight, M):
    """(K ⊙ J) @ M in float64: K ⊙ J = Σ_r weight[..., r]·onehot(index[..., r]), summed over
    a few r at a time (the one-hot block of all k at N = 1024 would be 8 GB)."""
    N, k = M.shape[-2], index.shape[-1]
    step = max(1, (1 << 23) // (N * N * index.shape[0] * index.shape[1]))
    A = torch.zeros(*index.shape[:-1], N, dtype=torch.float64, device=M.device)
    for r in range(0, k, step):
        onehot = torch.nn.functional.one_hot(index[..., r:r + step], N).double()  # (E, B, N, step, N)
        A += (onehot * weight[..., r:r + step].double().unsqueeze(-1)).sum(-2)
    return A @ M.double()


def rel_err(a, b):
    return float((a.double() - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tiles", ["default", "small"])
def test_kernel_equals_masked_dense_product(device, dtype, tiles, request):
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    for E, B, N, P in SHAPES:
        if tiles == "small" and N * P > 20000:
            continue  # the interpreter is slow on hundreds of programs; the shape adds nothing here
        for k in ks(N):
            M, weight, index = random_case(1000 * N + k, dtype, device, E, B, N, P, k)
            expected = reference(index, weight, M)
            triton_rows.gather_rows_triton_(index, weight, M)
            assert rel_err(M, expected) < TOL[dtype], f"E={E} B={B} N={N} P={P} k={k} {dtype}"


@pytest.mark.parametrize("device", DEVICES)
def test_strided_M_is_written_in_place(device):
    """M a view with no unit stride anywhere: the kernel follows M's strides and writes
    nothing outside the view."""
    E, B, N, P, k = 2, 3, 9, 70, 3
    base = torch.randn(B, E, N, 2 * P, dtype=torch.float64, device=device)
    M = base.transpose(0, 1)[..., ::2]  # (E, B, N, P), strides of neither layout
    untouched = base[..., 1::2].clone()
    _, weight, index = random_case(7, torch.float64, device, E, B, N, P, k)
    expected = reference(index, weight, M)
    triton_rows.gather_rows_triton_(index, weight, M)
    assert rel_err(M, expected) < TOL[torch.float64]
    assert torch.equal(base[..., 1::2], untouched)


@pytest.mark.parametrize("device", DEVICES)
def test_weights_are_summed_in_M_dtype(device):
    """float64 weights on a float32 M: the sum is in float32 (as the other paths do)."""
    E, B, N, P, k = 1, 2, 12, 50, 4
    M, weight, index = random_case(3, torch.float32, device, E, B, N, P, k)
    expected = reference(index, weight, M)
    triton_rows.gather_rows_triton_(index, weight.double(), M)
    assert M.dtype == torch.float32
    assert rel_err(M, expected) < TOL[torch.float32]


def test_block_width_keeps_one_tile_small_and_in_range():
    for N in (1, 5, 32, 33, 256, 1024, 4096):
        for P in (1, 17, 1000, 10 ** 6):
            width = triton_rows.block_width(N, P)
            assert width & (width - 1) == 0 and triton_rows.MIN_BLOCK <= width <= triton_rows.MAX_BLOCK
            rows = triton_rows._rows(N)
            assert rows >= N and rows * width <= max(triton_rows.TILE_ELEMENTS, rows * triton_rows.MIN_BLOCK)
    assert triton_rows.block_width(1024, 10 ** 6) == triton_rows.MIN_BLOCK


def test_unsupported_input_is_refused_by_name():
    index = torch.zeros(1, 1, 2, 1, dtype=torch.int64)
    with pytest.raises(TypeError, match="float32 or float64"):
        triton_rows.gather_rows_triton_(index, torch.ones(1, 1, 2, 1), torch.ones(1, 1, 2, 3, dtype=torch.float16))
    too_many = torch.empty(1, 1, triton_rows.MAX_ROWS + 1, 0)
    assert not triton_rows.supports(too_many)
    assert not triton_rows.supports(torch.empty(triton_rows.MAX_STREAMS + 1, 1, 2, 0))
    with pytest.raises(ValueError, match="N ≤"):
        triton_rows.gather_rows_triton_(index, torch.ones(1, 1, 2, 1), too_many)


@pytest.mark.parametrize("device", DEVICES)
def test_dispatch_sends_small_k_to_the_kernel_and_large_k_to_blas(device, monkeypatch):
    """kernels.gather_rows_impl takes the Triton kernel where it is available (here forced
    for the device under test) for k up to the dense crossover, the dense product above it."""
    monkeypatch.setattr(triton_rows, "available", lambda device: True)
    launched = []
    launch = triton_rows.gather_rows_triton_
    monkeypatch.setattr(triton_rows, "gather_rows_triton_", lambda *args: launched.append(1) or launch(*args))
    E, B, N, P = 2, 2, 16, 30
    for k, through_kernel in [(2, True), (4, True), (5, False), (16, False)]:
        launched.clear()
        M, weight, index = random_case(k, torch.float64, device, E, B, N, P, k)
        expected = reference(index, weight, M)
        kernels.gather_rows_impl(index, weight, M, compiled=False)
        assert bool(launched) == through_kernel, f"k={k}"
        assert rel_err(M, expected) < TOL[torch.float64]
