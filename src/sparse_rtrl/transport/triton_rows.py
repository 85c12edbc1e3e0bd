"""M[e, b, i, :] ← Σ_r weight[e, b, i, r]·M[e, b, index[e, b, i, r], :] on CUDA, by one Triton
kernel that reads each block of M once and writes it once.

The row-sparse product (K ⊙ J)·M of sparse RTRL, in place on the sensitivity M ``(E, B, N, P)``
(index: int64 ``(E, B, N, k)``, distinct sources in [0, N) per row; weight ``(E, B, N, k)``).
The pure-torch path (:func:`.kernels.gather_rows_torch_`) needs k ``index_select`` and k
``addcmul`` launches per column block, ~2k passes over the block in memory; here one program
per (stream s = e·B + b, column block [c0, c0 + BLOCK)) gathers the k source segments of every
row, sums them with the weights in M's dtype (float32 or float64) in a register tile of
``ROWS × BLOCK`` (ROWS = N rounded up to a power of two), waits until every thread of the
program has done its reads, then stores the N new row segments. The k·N segment reads of a
block touch only that block's N segments (32 KB in float32 up to N = 512, N·64 bytes above),
which should stay in the GPU's L1/L2 cache, so M crosses memory once each way per step.
Programs own disjoint column blocks, so they never race with one another. Not yet run or timed
on a GPU (tested through Triton's CPU interpreter only); a failed import, compile or launch
hands the product to pure torch (:func:`give_up`).

``triton`` is imported on first use only: without it this module imports, :func:`available`
is False, and :func:`gather_rows_triton_` raises a RuntimeError that says so.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import warnings

import torch

from .. import settings

Tensor = torch.Tensor

#: elements of one program's result tile (ROWS × BLOCK): the column block is narrowed as N
#: grows so that the tile stays about this size (32 per thread at 8 warps, held in registers)
TILE_ELEMENTS = 8192
#: the narrowest column block (a 64-byte row segment in float32), used for N ≥ 512
MIN_BLOCK = 16
#: the widest column block (small N), so that a long row still spreads over many programs
MAX_BLOCK = 512
#: streams E·B per launch: the second grid axis holds at most 65535 programs
MAX_STREAMS = 65535
#: the largest N taken: the tile is N × 16 there, ≈ 64 values per thread at 16 warps (tested
#: up to here; above it the tile would spill from registers, so pure torch takes over)
MAX_ROWS = 1024
DTYPES = (torch.float32, torch.float64)

tl = None  # triton.language, bound by _kernel() on first use (the kernel's body reads it)


# ROWS and BLOCK are compile-time constants; under ``from __future__ import annotations`` the
# annotation stays the text "tl.constexpr" (what Triton reads), so tl need not exist yet here
def _gather_rows_block(M, index, weight, N, P, k, B,
                       stride_e, stride_b, stride_n, stride_p,
                       ROWS: tl.constexpr, BLOCK: tl.constexpr):
    c0 = tl.program_id(0).to(tl.int64) * BLOCK
    s = tl.program_id(1).to(tl.int64)  # the stream e·B + b
    rows = tl.arange(0, ROWS)
    cols = c0 + tl.arange(0, BLOCK)
    row_ok = rows < N
    ok = row_ok[:, None] & (cols < P)[None, :]
    stream = M + (s // B) * stride_e + (s % B) * stride_b
    column_offsets = (cols * stride_p)[None, :]
    table = s * N * k + rows.to(tl.int64) * k  # index and weight are contiguous (E·B, N, k)
    # tl.full, a builtin, not tl.zeros (a jitted helper, fixed as compiled or interpreted when
    # triton is imported): the kernel then runs in Triton's interpreter whenever it was imported
    acc = tl.full((ROWS, BLOCK), 0, M.dtype.element_ty)
    for r in range(k):
        source = tl.load(index + table + r, mask=row_ok, other=0)
        w = tl.load(weight + table + r, mask=row_ok, other=0.0)
        picked = tl.load(stream + (source * stride_n)[:, None] + column_offsets, mask=ok, other=0.0)
        acc += w[:, None] * picked
    # the tile is spread over the program's threads: none may overwrite a row segment of this
    # block before every other thread has read it as a source
    tl.debug_barrier()
    tl.store(stream + (rows.to(tl.int64) * stride_n)[:, None] + column_offsets, acc, mask=ok)


@functools.cache
def importable() -> bool:
    """Whether ``triton`` can be imported (looked up once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


#: why the kernel was given up in this process (a failed import, compile or launch), or None
broken: str | None = None


def available(device: torch.device | str) -> bool:
    """Whether the Triton kernel runs tensors on ``device``: a CUDA device, ``triton``
    importable, not switched off (``SPARSE_RTRL_NO_TRITON=1``, :mod:`sparse_rtrl.settings`) and
    not given up after a failure (:func:`give_up`)."""
    return (torch.device(device).type == "cuda" and broken is None and settings.triton_enabled()
            and importable())


def give_up(error: BaseException) -> None:
    """Stop using the kernel in this process after ``error`` (said once, as a RuntimeWarning):
    the row products go to pure torch, and :func:`available` is False from now on."""
    global broken
    broken = f"{type(error).__name__}: {str(error).strip()[:300]}"
    warnings.warn(f"sparse_rtrl: the Triton row kernel failed ({broken}); row-sparse products on "
                  "CUDA use the pure-torch path from now on (set SPARSE_RTRL_NO_TRITON=1 to choose it "
                  "and silence this)", RuntimeWarning, stacklevel=3)


def supports(M: Tensor) -> bool:
    """Whether the kernel takes this M: float32/float64, N ≤ MAX_ROWS (one tile in registers),
    and E·B within a grid axis (65535)."""
    E, B, N = M.shape[:3]
    return M.dtype in DTYPES and N <= MAX_ROWS and E * B <= MAX_STREAMS


def _rows(N: int) -> int:
    return 1 << max(0, N - 1).bit_length()  # N rounded up to a power of two (1 for N ≤ 1)


def block_width(N: int, P: int) -> int:
    """Columns per program: a power of two in [MIN_BLOCK, MAX_BLOCK] with ROWS × BLOCK ≈
    TILE_ELEMENTS, no wider than P needs."""
    fit = max(MIN_BLOCK, TILE_ELEMENTS // _rows(N))
    return max(MIN_BLOCK, min(fit, MAX_BLOCK, _rows(P)))


@functools.cache
def _kernel():
    global tl
    try:
        import triton
        import triton.language
    except ImportError as error:
        raise RuntimeError(f"gather_rows_triton_ needs the triton package (pip install triton): {error}; "
                           "without it use kernels.gather_rows_torch_") from error
    tl = triton.language
    return triton.jit(_gather_rows_block)


def gather_rows_triton_(index: Tensor, weight: Tensor, M: Tensor) -> None:
    """M[i] ← Σ_r weight[i, r]·M[index[i, r]] per stream, in place, by the Triton kernel.

    M: float32/float64 ``(E, B, N, P)`` (any strides); index ``(E, B, N, k)`` integer;
    weight ``(E, B, N, k)``, summed in M's dtype. CUDA tensors, or CPU tensors under Triton's
    interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is imported).
    """
    kernel = _kernel()
    if M.dtype not in DTYPES:
        raise TypeError(f"gather_rows_triton_ takes float32 or float64 M, not {M.dtype}")
    if not supports(M):
        raise ValueError(f"gather_rows_triton_ takes N ≤ {MAX_ROWS} and E·B ≤ "
                         f"{MAX_STREAMS}, not M of shape {tuple(M.shape)}")
    E, B, N, P = M.shape
    k = index.shape[-1]
    if M.numel() == 0:
        return
    if k == 0:
        M.zero_()
        return
    index = index.to(torch.int64).reshape(E * B, N, k).contiguous()
    weight = weight.to(M.dtype).reshape(E * B, N, k).contiguous()
    BLOCK = block_width(N, P)
    ROWS = _rows(N)
    # about 32 tile elements per thread; Triton wants a power of two, at most 16 warps
    warps = min(16, max(1, ROWS * BLOCK // 1024))
    # column blocks on the first grid axis (up to 2³¹ − 1 programs; the second takes 65535)
    grid = (-(-P // BLOCK), E * B)
    # Triton launches on the current CUDA device, which need not be M's
    with torch.cuda.device(M.device) if M.is_cuda else contextlib.nullcontext():
        kernel[grid](M, index, weight, N, P, k, B, *M.stride(), ROWS=ROWS, BLOCK=BLOCK, num_warps=warps)
