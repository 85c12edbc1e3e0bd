"""In-place products on the dense sensitivity M ``(E, B, N, P)``.

M is the largest object in exact RTRL (N·P numbers per stream), so every product here
overwrites M without a second M-sized buffer, and each tries to stream M through memory once
per step (one read and one write):

* :func:`matmul_` (J·M, full RTRL): in float32 on the CPU, one stream at a time by oneDNN
  (:mod:`.onednn`, about twice the BLAS here) when 64 ≤ N ≤ 192 and one stream's M is at most
  16 MB; otherwise columns of M in blocks, each block's product going to a small scratch
  buffer by BLAS and copied back while still in cache.
* :func:`gather_rows_` ((K ⊙ J)·M, k kept sources per row): on CPU a compiled kernel
  (:mod:`._cpu_kernels`) forms the k-term sums of a cache-sized column block and writes them
  back (one read + one write of M); when k is a large fraction of N (above N/2 with the
  compiled kernel, N/4 without) the kept entries are scattered into a dense N×N matrix and
  BLAS does the product instead; on CUDA, when ``triton`` is installed, a Triton kernel
  (:mod:`.triton_rows`) that also reads and writes each column block of M once; elsewhere
  (CUDA without triton, CPU without a compiler) a pure-torch blocked gather.
* :func:`gather_columns_` (J[:, S]·M[S] + diag·M, one set S of k sources): only the k rows
  M[S] are copied (per block when k is large), then M is rewritten in one pass; the compiled
  kernel adds a unit-local Ī in that pass and, for an M larger than the cache, writes M by
  streaming stores (written, never read).
* :func:`gather_columns_gradient_`: that update and the gradient g = δ·M_new[:H] in one pass
  (the column rule defers its update to the gradient); :func:`delta_rows`: g alone, one read.

The two gathers are also torch operators (:mod:`.ops`), called while ``torch.compile`` traces.

Each function has a plain reference in the tests (dense masked J, then ``@``); the
pure-torch paths stay device-agnostic and are tested on CPU too.
"""

from __future__ import annotations

import torch

from ..influence import UnitLocalImmediate
from . import _cpu_kernels, onednn, triton_rows

Tensor = torch.Tensor

#: bytes of BLAS scratch per column block on CPU: big enough for BLAS efficiency, small
#: enough to stay in the last-level cache
SCRATCH_BYTES = 4 << 20
#: the same on other devices (fewer, larger blocks: each block costs a few kernel launches)
DEVICE_SCRATCH_BYTES = 64 << 20
#: bytes of one column block of M (N row segments) in the compiled row kernel: the block is
#: copied once from memory to a per-thread buffer of this size and then read k times from cache
ROW_BLOCK_BYTES = 256 << 10
#: ...but at least this many columns, so each of the N row segments streams well (large N)
ROW_BLOCK_MIN_WIDTH = 256
#: bytes of the k source-row segments the compiled column kernel keeps in cache per block
COLUMN_BLOCK_BYTES = 256 << 10
#: bytes of M above which the compiled column kernel writes M by streaming stores (M is then
#: written without being read; below this M may stay in the last-level cache for the
#: gradient's read, and streaming it out would cost a trip to memory)
STREAM_BYTES = 32 << 20
#: bytes of the block of g the compiled gradient kernel accumulates in cache
GRADIENT_BLOCK_BYTES = 512 << 10
#: the learner's J·M goes by oneDNN (float32, CPU) from this N up: below it the BLAS's batched
#: product is as fast (5 streams of N = 32: 0.12 ms by bmm, 0.15 ms by oneDNN; N = 64: oneDNN
#: takes half the time, N = 96 too; docs/performance.md)
ONEDNN_MIN_N = 64
#: ...up to this N: on the machine this was measured on, oneDNN's products were bit-identical
#: to the BLAS's for every N ≤ 192 tried and differed from N = 193 on (by 5–7e-7 of the
#: largest entry), so results computed before the route existed keep their numbers (the
#: numeric path does not name the GEMM, as it names no BLAS)
ONEDNN_MAX_N = 192
#: ...while one stream's M (N × P) is at most this many bytes: the op allocates its output, so
#: larger products keep the blocked BLAS path, whose scratch stays in cache
ONEDNN_MAX_BYTES = 16 << 20
#: k/N above which a row-sparse product goes through a dense masked matrix and BLAS: with the
#: compiled kernel (measured crossover ≈ N/2 on a 2-core AMD EPYC, float32), and without it
DENSE_FRACTION_COMPILED = 0.5
DENSE_FRACTION = 0.25


def numeric_path(device: torch.device | str = "cpu") -> str:
    """Which code computes the sparse products on ``device``: ``"c-kernels(fma) v2"`` (the
    compiled CPU kernels with fused multiply-adds, version 2), ``"c-kernels v2"`` (no FMA),
    ``"torch+triton"`` (CUDA with triton: the row product by :mod:`.triton_rows`, the rest
    pure torch) or ``"torch"`` (the pure-torch paths: other devices, no compiler, or
    ``SPARSE_RTRL_NO_EXTENSION``). The paths round differently, so results record it.

    On CPU this builds or loads the kernels (see :func:`._cpu_kernels.get`) if not done yet.
    """
    if triton_rows.available(device):
        return "torch+triton"
    if torch.device(device).type != "cpu" or _cpu_kernels.get() is None:
        return "torch"
    return ("c-kernels(fma)" if _cpu_kernels.fma() else "c-kernels") + KERNELS_VERSION


#: bumped whenever the compiled kernels round differently: "" — the products only (up to
#: 2026-12-01); " v2" — g = δ·M by its own kernel and the one-pass column kernel (float32
#: results move at ≈ 1e-6 relative), so a sweep resumed across the change says so
KERNELS_VERSION = " v2"


def _scratch_bytes(device: torch.device) -> int:
    return SCRATCH_BYTES if device.type == "cpu" else DEVICE_SCRATCH_BYTES


def _block_columns(rows: int, P: int, itemsize: int, budget: int = 0) -> int:
    budget = budget or SCRATCH_BYTES
    return max(64, min(P, budget // max(1, rows * itemsize)))


def _balanced(P: int, width: int) -> int:
    """A block width ≤ ``width`` that cuts P columns into equal blocks (no ragged last one)."""
    width = max(1, min(P, width))
    blocks = -(-P // width)
    return -(-P // blocks)


def _lines(width: int, P: int, itemsize: int) -> int:
    """``width`` rounded up to whole 64-byte cache lines (at most P), so that column blocks of
    rows that start on a line also end on one (a line shared by two blocks, written by
    streaming stores from both, is flushed to memory in halves)."""
    per_line = max(1, 64 // itemsize)
    return min(P, -(-width // per_line) * per_line)


def _by_onednn(M: Tensor) -> bool:
    N, P = M.shape[-2:]
    return (M.device.type == "cpu" and M.dtype == torch.float32 and ONEDNN_MIN_N <= N <= ONEDNN_MAX_N
            and N * P * 4 <= ONEDNN_MAX_BYTES and M.is_contiguous() and not _tracing()
            and onednn.usable())


def matmul_(A: Tensor, M: Tensor) -> None:
    """M ← A·M for A ``(E, B, N, N)`` (J, or K ⊙ J), in place."""
    E, B, N, P = M.shape
    A3 = A.reshape(E * B, N, N)
    M3 = M.view(E * B, N, P)
    if A.dtype == M.dtype and _by_onednn(M):  # A·M = A·(Mᵀ)ᵀ: the op's x·wᵀ, w = Mᵀ a strided view
        for s in range(E * B):
            M3[s].copy_(onednn.linear(A3[s], M3[s].t()))
        return
    width = _block_columns(E * B * N, P, M.element_size(), _scratch_bytes(M.device))
    if width >= P:  # one block: the product into scratch, copied back
        M3.copy_(torch.bmm(A3, M3))
        return
    scratch = M.new_empty(E * B, N, width)
    for c0 in range(0, P, width):
        c1 = min(P, c0 + width)
        out = scratch[..., : c1 - c0]
        torch.bmm(A3, M3[..., c0:c1], out=out)
        M3[..., c0:c1].copy_(out)


def dense_rows(index: Tensor, weight: Tensor, N: int) -> Tensor:
    """The row-sparse matrix K ⊙ J ``(E, B, N, N)`` from its kept sources and entries."""
    A = weight.new_zeros(*index.shape[:-1], N)
    return A.scatter_add_(-1, index, weight)


def compiled_for(M: Tensor) -> bool:
    """Whether the compiled CPU kernels apply to M (contiguous float32/float64 on the CPU,
    kernels built and not switched off)."""
    return _cpu_kernels.usable(M) and M.is_contiguous()


def _tracing() -> bool:
    return torch.compiler.is_compiling()


def gather_rows_(index: Tensor, weight: Tensor, M: Tensor) -> None:
    """M[i] ← Σ_r weight[i, r]·M[index[i, r]] per stream, in place (row-sparse K ⊙ J).

    index, weight: ``(E, B, N, k)``; index holds distinct source units in [0, N) per row.
    Under ``torch.compile`` this is the operator ``sparse_rtrl::gather_rows_`` (:mod:`.ops`);
    eager calls skip the operator's dispatch (≈ 12 µs a call) and run the same code directly.
    """
    if _tracing():
        torch.ops.sparse_rtrl.gather_rows_(index, weight, M)
    else:
        gather_rows_impl(index, weight, M, compiled_for(M))


def gather_rows_impl(index: Tensor, weight: Tensor, M: Tensor, compiled: bool) -> None:
    """:func:`gather_rows_` by the compiled kernel (``compiled``), by the Triton kernel (CUDA
    tensors, triton installed) or by pure torch; large k by a dense product in every case."""
    E, B, N, P = M.shape
    k = index.shape[-1]
    if k == 0:
        M.zero_()
    elif k > (DENSE_FRACTION_COMPILED if compiled else DENSE_FRACTION) * N:
        matmul_(dense_rows(index, weight, N), M)
    elif compiled:
        width = _balanced(P, max(ROW_BLOCK_MIN_WIDTH, ROW_BLOCK_BYTES // (N * M.element_size())))
        _cpu_kernels.rows(index.reshape(E * B, N, k).contiguous(),
                          weight.reshape(E * B, N, k).to(M.dtype).contiguous(),
                          M.view(E * B, N, P), width)
    elif triton_rows.available(M.device) and triton_rows.supports(M):
        try:
            triton_rows.gather_rows_triton_(index, weight, M)
        except Exception as error:  # a broken install, a compile or launch failure: M untouched
            triton_rows.give_up(error)
            gather_rows_torch_(index, weight, M)
    else:
        gather_rows_torch_(index, weight, M)


def gather_rows_torch_(index: Tensor, weight: Tensor, M: Tensor) -> None:
    """Pure-torch :func:`gather_rows_` (any device): per column block, k gathers into scratch."""
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
    width = _block_columns(rows, P, M.element_size(), _scratch_bytes(M.device))
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


def gather_columns_(columns: Tensor, weight: Tensor, M: Tensor, diagonal: Tensor | None = None,
                    immediate=None) -> None:
    """M ← J[:, S]·M[S] (+ diag(diagonal)·M) (+ Ī) per stream, in place (column-sparse K ⊙ J).

    columns: ``(E, B, k)`` source units S; weight: ``(E, B, N, k)`` the kept entries J[:, S];
    diagonal: ``(E, B, N)`` or None; immediate: Ī (anything with ``add_to_dense``) or None.
    Only the k rows M[S] are copied. The compiled kernel adds a unit-local Ī
    (:class:`~sparse_rtrl.influence.UnitLocalImmediate`) in its own pass over M; otherwise Ī is
    added after the product. Under ``torch.compile`` the product is the operator
    ``sparse_rtrl::gather_columns_`` (as :func:`gather_rows_`).
    """
    if _tracing():
        torch.ops.sparse_rtrl.gather_columns_(columns, weight, M, diagonal)
    elif gather_columns_impl(columns, weight, M, diagonal, compiled_for(M), immediate):
        return
    if immediate is not None:
        immediate.add_to_dense(M)


def _unit_local_table(immediate, M: Tensor) -> list[tuple[int, Tensor]] | None:
    """Ī as the compiled column kernel takes it, (first column, C_p) per block, or None
    when Ī is not unit-local."""
    if not isinstance(immediate, UnitLocalImmediate):
        return None
    E, B = M.shape[:2]
    table = []
    for index, block in enumerate(immediate.layout.blocks):
        values = immediate.block_values(index).to(M.dtype)  # (E, B, S, G, n, L): Ī's own products
        table.append((block.offset, values.reshape(E * B, *values.shape[2:]).contiguous()))
    return table


def gather_columns_impl(columns: Tensor, weight: Tensor, M: Tensor, diagonal: Tensor | None,
                        compiled: bool, immediate=None) -> bool:
    """:func:`gather_columns_` by the compiled kernel (``compiled``, k ≤ 16) or by pure torch;
    True when the compiled kernel has added ``immediate`` too (its caller adds it otherwise)."""
    E, B, N, P = M.shape
    k = columns.shape[-1]
    if k <= 16 and compiled:
        table = _unit_local_table(immediate, M)
        _compiled_columns(columns, weight, M, diagonal, table)
        return table is not None
    gather_columns_torch_(columns, weight, M, diagonal)
    return False


def _compiled_columns(columns: Tensor, weight: Tensor, M: Tensor, diagonal: Tensor | None, table,
                      delta: Tensor | None = None) -> Tensor | None:
    E, B, N, P = M.shape
    k = columns.shape[-1]
    return _cpu_kernels.columns(
        columns.reshape(E * B, k).contiguous(),
        weight.reshape(E * B, N, k).to(M.dtype).contiguous(),
        M.view(E * B, N, P),
        None if diagonal is None else diagonal.reshape(E * B, N).to(M.dtype).contiguous(),
        _lines(_balanced(P, max(1024, COLUMN_BLOCK_BYTES // (max(k, 1) * M.element_size()))), P,
               M.element_size()),
        stream=diagonal is None and M.numel() * M.element_size() >= STREAM_BYTES,
        immediate=table,
        delta=None if delta is None else delta.reshape(E * B, -1).to(M.dtype).contiguous(),
        members=E,
    )


def fuses_columns(M: Tensor, k: int, immediate) -> bool:
    """Whether :func:`gather_columns_gradient_` makes one pass over M: the compiled kernel
    applies (eager, k ≤ 16) and Ī is unit-local."""
    return k <= 16 and isinstance(immediate, UnitLocalImmediate) and not _tracing() and compiled_for(M)


def gather_columns_gradient_(columns: Tensor, weight: Tensor, M: Tensor, diagonal: Tensor | None,
                             immediate, delta: Tensor) -> Tensor:
    """M ← J[:, S]·M[S] (+ diag(diagonal)·M) + Ī in place, and g = Σ_b δ_b·M_b[:H] ``(E, P)``
    of the new M, for δ ``(E, B, H)``: a step's update and its gradient.

    Where :func:`fuses_columns` holds, one pass over M: each row of the new M adds its share
    of g while it is still in cache, so M is written once and never read back (g then sums
    the rows one at a time, and rounds differently from :func:`delta_rows`). Elsewhere
    :func:`gather_columns_`, then :func:`delta_rows`.
    """
    if not fuses_columns(M, columns.shape[-1], immediate):
        gather_columns_(columns, weight, M, diagonal, immediate)
        return delta_rows(delta, M)
    return _compiled_columns(columns, weight, M, diagonal, _unit_local_table(immediate, M), delta)


def gather_columns_torch_(columns: Tensor, weight: Tensor, M: Tensor, diagonal: Tensor | None = None) -> None:
    """Pure-torch :func:`gather_columns_` (any device).

    Small k: the k rows M[S] are copied whole (k·P numbers), then one batched product
    writes M. Large k (copying M[S] whole would cost more than an eighth of M): per column
    block, so the extra memory stays one scratch block.
    """
    E, B, N, P = M.shape
    k = columns.shape[-1]
    M3 = M.view(E * B, N, P)
    W = weight.reshape(E * B, N, k)
    if k == 0:
        if diagonal is None:
            M.zero_()
        else:
            M3.mul_(diagonal.reshape(E * B, N, 1))
        return
    cols = columns.reshape(E * B, k, 1)
    if 8 * k <= N:
        picked = M3.gather(1, cols.expand(E * B, k, P))
        if diagonal is None:
            torch.bmm(W, picked, out=M3)
        else:
            M3.mul_(diagonal.reshape(E * B, N, 1)).baddbmm_(W, picked)
        return
    width = _block_columns(E * B * N, P, M.element_size(), _scratch_bytes(M.device))
    scratch = M.new_empty(E * B, N, width)
    d = None if diagonal is None else diagonal.reshape(E * B, N, 1)
    for c0 in range(0, P, width):
        c1 = min(P, c0 + width)
        block = M3[..., c0:c1]
        out = scratch[..., : c1 - c0]
        torch.bmm(W, block.gather(1, cols.expand(E * B, k, c1 - c0)), out=out)
        if d is not None:
            out.addcmul_(block, d)
        block.copy_(out)


def delta_rows(delta: Tensor, M: Tensor) -> Tensor:
    """g = Σ_b δ_b·M_b[:H], ``(E, P)``, for δ ``(E, B, H)`` and M ``(E, B, N, P)``: the
    transported gradient reads only the first H rows of M (the hidden output h).

    On CPU the compiled kernel makes one read pass over those rows; elsewhere ``einsum``.
    """
    H = delta.shape[-1]
    if _cpu_kernels.usable(M) and M.is_contiguous():
        P = M.shape[-1]
        width = _balanced(P, min(-(-P // torch.get_num_threads()), GRADIENT_BLOCK_BYTES // M.element_size()))
        return _cpu_kernels.gradient(M, delta.to(M.dtype).contiguous(), width)
    return torch.einsum("ebh,ebhp->ep", delta, M[:, :, :H])
