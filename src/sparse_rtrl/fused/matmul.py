"""Mᵀ_t = Mᵀ_{t−1}·J_tᵀ, the product of full RTRL, by the fastest exact GEMM torch offers here.

On CPU in float32 torch's BLAS (MKL) takes its AVX2 path on AMD processors, about half of
what the machine can do for this shape (an (N × N) matrix against P ≫ N rows); oneDNN, which
torch also ships, picks its kernel by instruction set and reaches about twice the rate
(benchmarks/RESULTS.md, "fused step"). Its entry point here, ``torch.ops.mkldnn._linear_pointwise``
(the op torch.compile's CPU backend emits for a linear layer), allocates its output, so the
product is taken in row blocks of ≈ 4 MB copied into the caller's buffer: a block is still in
cache when it is copied, and blocks that size are recycled by the allocator instead of being
mapped afresh every step (an (N = 256) Mᵀ is 68 MB). Both paths compute the same float32
products (no reduced-precision mode); :func:`onednn_works` checks the op once against
``torch.mm`` before it is trusted, and everything else (float64, CUDA, a torch without
oneDNN) takes ``torch.mm``.
"""

from __future__ import annotations

import functools

import torch

Tensor = torch.Tensor

#: bytes of one output block of the oneDNN path
BLOCK_BYTES = 1 << 22


@functools.cache
def onednn_works() -> bool:
    """Whether torch's oneDNN linear op exists and agrees with ``torch.mm`` on a test product."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        a, w = torch.randn(37, 8, generator=g), torch.randn(8, 8, generator=g)
        got = op(a, w, None, "none", [], "")
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return bool(torch.allclose(got, a @ w.t(), rtol=1e-5, atol=1e-6))


class RightProduct:
    """``out = A·Jᵀ`` for A ``(P, N)``, J ``(N, N)``, into a preallocated ``out``."""

    def __init__(self, P: int, N: int, like: Tensor):
        self.onednn = like.device.type == "cpu" and like.dtype == torch.float32 and onednn_works()
        rows = max(1, BLOCK_BYTES // (4 * N))
        self.blocks = [(s, min(P, s + rows)) for s in range(0, P, rows)]
        self.path = "oneDNN" if self.onednn else "torch.mm"

    def __call__(self, A: Tensor, J: Tensor, out: Tensor) -> Tensor:
        if not self.onednn:
            return torch.mm(A, J.t(), out=out)
        op = torch.ops.mkldnn._linear_pointwise
        for lo, hi in self.blocks:
            out[lo:hi].copy_(op(A[lo:hi], J, None, "none", [], ""))
        return out
