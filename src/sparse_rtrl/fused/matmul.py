"""Mᵀ_t = Mᵀ_{t−1}·J_tᵀ, the product of full RTRL, by the fastest exact GEMM torch offers here.

In float32 on the CPU that is oneDNN (:mod:`sparse_rtrl.transport.onednn`: about twice torch's
BLAS on this AMD machine; benchmarks/RESULTS.md, "fused step"). Its op allocates its output, so
the product is taken in row blocks of ≈ 4 MB copied into the caller's buffer: a block is still
in cache when it is copied, and blocks that size are recycled by the allocator instead of being
mapped afresh every step (an (N = 256) Mᵀ is 68 MB). Everything else (float64, CUDA, a torch
without oneDNN) takes ``torch.mm``.
"""

from __future__ import annotations

import torch

from ..transport.onednn import linear, usable

Tensor = torch.Tensor

#: bytes of one output block of the oneDNN path
BLOCK_BYTES = 1 << 22


class RightProduct:
    """``out = A·Jᵀ`` for A ``(P, N)``, J ``(N, N)``, into a preallocated ``out``."""

    def __init__(self, P: int, N: int, like: Tensor):
        self.onednn = like.device.type == "cpu" and like.dtype == torch.float32 and usable()
        rows = max(1, BLOCK_BYTES // (4 * N))
        self.blocks = [(s, min(P, s + rows)) for s in range(0, P, rows)]
        self.path = "oneDNN" if self.onednn else "torch.mm"

    def __call__(self, A: Tensor, J: Tensor, out: Tensor) -> Tensor:
        if not self.onednn:
            return torch.mm(A, J.t(), out=out)
        for lo, hi in self.blocks:
            out[lo:hi].copy_(linear(A[lo:hi], J))
        return out
