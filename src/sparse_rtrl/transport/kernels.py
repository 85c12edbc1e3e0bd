"""In-place products on the dense sensitivity M ``(E, B, N, P)``.

M is the largest object in exact RTRL (N·P numbers per stream), so every product here
overwrites M without a second M-sized buffer: columns of M are processed in blocks that fit
in cache, each block computed into a small scratch buffer and copied back. Each function has
a plain reference in the tests (dense masked J, then ``@``).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

#: bytes of scratch per column block; big enough for BLAS efficiency, small enough for L2/L3
SCRATCH_BYTES = 4 << 20


def _block_columns(rows: int, P: int, itemsize: int) -> int:
    return max(64, min(P, SCRATCH_BYTES // max(1, rows * itemsize)))


def matmul_(A: Tensor, M: Tensor) -> None:
    """M ← A·M for A ``(E, B, N, N)`` (J, or K ⊙ J), in place."""
    E, B, N, P = M.shape
    A3 = A.reshape(E * B, N, N)
    M3 = M.view(E * B, N, P)
    width = _block_columns(E * B * N, P, M.element_size())
    scratch = M.new_empty(E * B, N, width)
    for c0 in range(0, P, width):
        c1 = min(P, c0 + width)
        out = scratch[..., : c1 - c0]
        torch.bmm(A3, M3[..., c0:c1], out=out)
        M3[..., c0:c1].copy_(out)


def gather_rows_(index: Tensor, weight: Tensor, M: Tensor) -> None:
    """M[i] ← Σ_r weight[i, r]·M[index[i, r]] per stream, in place (row-sparse K ⊙ J).

    index, weight: ``(E, B, N, k)``; index holds source units in [0, N).
    """
    E, B, N, P = M.shape
    k = index.shape[-1]
    if k == 0:
        M.zero_()
        return
    rows = E * B * N
    offsets = torch.arange(E * B, device=M.device).repeat_interleave(N) * N
    flat_index = (index.reshape(rows, k) + offsets[:, None]).t().contiguous()  # (k, rows)
    w = weight.reshape(rows, k).t().unsqueeze(-1)  # (k, rows, 1)
    M2 = M.view(rows, P)
    width = _block_columns(rows, P, M.element_size())
    acc = M.new_empty(rows, width)
    picked = M.new_empty(rows, width)
    for c0 in range(0, P, width):
        c1 = min(P, c0 + width)
        src = M2[:, c0:c1]
        a, p = acc[:, : c1 - c0], picked[:, : c1 - c0]
        torch.index_select(src, 0, flat_index[0], out=p)
        torch.mul(p, w[0], out=a)
        for r in range(1, k):
            torch.index_select(src, 0, flat_index[r], out=p)
            a.addcmul_(p, w[r])
        src.copy_(a)


def gather_columns_(columns: Tensor, weight: Tensor, M: Tensor, diagonal: Tensor | None = None) -> None:
    """M ← J[:, S]·M[S] (+ diag(diagonal)·M) per stream, in place (column-sparse K ⊙ J).

    columns: ``(E, B, k)`` source units S; weight: ``(E, B, N, k)`` the kept entries J[:, S];
    diagonal: ``(E, B, N)`` or None. Only the k rows M[S] are copied.
    """
    E, B, N, P = M.shape
    k = columns.shape[-1]
    M3 = M.view(E * B, N, P)
    picked = M3.gather(1, columns.reshape(E * B, k, 1).expand(E * B, k, P)) if k else None
    if diagonal is not None:
        M3.mul_(diagonal.reshape(E * B, N, 1))
        if k:
            M3.baddbmm_(weight.reshape(E * B, N, k), picked)
    elif k:
        torch.bmm(weight.reshape(E * B, N, k), picked, out=M3)
    else:
        M.zero_()
