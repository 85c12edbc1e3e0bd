"""Optional fused CPU kernels for the sparse products on M, compiled on first use.

Three loops that PyTorch cannot express in one pass over M, and the selection of the kept
paths (C source: ``csrc/sparse_kernels.c``, package data beside this module):

* ``rows``: M[i] ← Σ_r w[i, r]·M[idx[i, r]] (row-sparse K ⊙ J). M is cut into column blocks
  small enough to stay in cache; each block's N row segments are copied once to a per-thread
  buffer (the one read of M from memory, next rows prefetched), then every row segment of M
  is overwritten by its k-term sum formed from that buffer (the one write): one read and one
  write of M per step, whatever k (the pure-torch path makes ~2k passes over each block).
* ``columns``: M[i] ← d_i·M[i] + Σ_r W[i, r]·M[S_r] (column-sparse J[:, S]·M[S], the kept
  diagonal folded in). Per column block the k source rows are copied to a small buffer,
  then every row is rewritten in place: one pass over M. When M is larger than the cache
  (and no diagonal is kept) the rows are written by streaming stores: M is written without
  being read first, a write pass instead of a read-and-write pass.
* ``gradient``: g = δ·M[:H], the first H rows summed four at a time into a cache-resident
  block of g (one read pass; torch's ``einsum`` takes ≈ 1.6× a read pass here).
* ``top_k``: the k largest scores of each row (the kept paths K_t), eight rows at a time in
  vector lanes by compares and selects. On fresh random scores torch's introselect
  mispredicts its branches: 0.55 µs a row of 64 (16 × 64 rows: 0.56 ms, against 0.09 ms
  here). Rows whose answer depends on tie-breaking are left to ``torch.topk``, so the
  indices are always ``torch.topk``'s and no result changes.

All run in parallel over (stream, column block) with OpenMP, using ``torch.get_num_threads()``
threads. The code is plain C with no torch headers, built by the system C compiler on first
use (a few seconds; ``sparse-rtrl build-kernels`` does it ahead) into a private cache folder
(``$SPARSE_RTRL_CACHE``, else ``~/.cache/sparse_rtrl``; see :mod:`._kernel_cache` for the
ownership and mode checks and the temporary fallback) and called through :mod:`ctypes` on the
tensors' data pointers (the GIL is released during the call). Index ranges are the caller's
promise (``kernels.py`` passes indices from ``topk`` or a validated mask); dtypes, devices,
shapes and contiguity are checked here.
When no compiler is found, on any build or load error, when the cache folder is refused,
for tensors that are not contiguous float32/float64 CPU tensors, or with
``SPARSE_RTRL_NO_EXTENSION=1`` in the environment, :func:`get` returns None and
:mod:`.kernels` uses its pure-torch path: the library never needs this module to work. A
fallback that is not asked for (anything but ``SPARSE_RTRL_NO_EXTENSION``) is announced
once per process by a :class:`RuntimeWarning` naming the cause.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings

import torch

from .. import settings
from ..errors import ConfigurationError
from . import _kernel_cache

#: the kernels' C source, a package-data file beside this module
SOURCE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "sparse_kernels.c")

_lock = threading.Lock()
_lib = None
_tried = False
#: why the compiled kernels are not in use (None when they are, or before the first try)
reason: str | None = None

_I64, _INT, _PTR = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p


def _cpu_flags() -> list[str]:
    """Vector flags the machine supports (AVX2 + FMA), so the loops vectorise."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= set(flags) else []


def disabled() -> bool:
    """Whether ``SPARSE_RTRL_NO_EXTENSION`` (or ``settings.using(compiled_kernels=False)``)
    asks for the pure-torch paths."""
    return not settings.compiled_kernels_enabled()


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


class KernelBuildError(ConfigurationError):
    """The compiled kernels cannot be built or loaded (the message says why)."""


def _flags() -> list[str]:
    return ["-O3", "-std=c99", "-ffp-contract=fast", "-fPIC", "-shared", "-fopenmp", *_cpu_flags()]


def fma() -> bool:
    """Whether the kernels are compiled with fused multiply-adds (``-mfma``): their sums are
    then contracted to FMAs, which round differently from the torch path."""
    return "-mfma" in _flags()


def source() -> str:
    """The kernels' C source (``csrc/sparse_kernels.c``, installed with the package)."""
    try:
        with open(SOURCE_PATH, encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        raise KernelBuildError(f"the kernel source {SOURCE_PATH} cannot be read ({err.strerror}): "
                               "reinstall sparse_rtrl (the file is package data)") from None


def build() -> str:
    """Compile the kernels into the cache (if not there yet) and return the library's path.

    Raises :class:`KernelBuildError` naming the cause (no compiler, a compiler error, a
    refused cache folder); :func:`get` is the never-raising form used by the library.
    """
    return compile_library(source(), "sparse_rtrl_kernels", _flags())


def compile_library(code: str, stem: str, flags: list[str], libs: tuple[str, ...] = ()) -> str:
    """Compile C ``code`` into ``<stem>_<hash>.so`` in the private kernel cache, once (the
    hash covers the code and the flags); its path. Used by every compiled part of the library."""
    tag = hashlib.sha1("\0".join([code, *flags, *libs]).encode()).hexdigest()[:12]
    try:
        path, note = _kernel_cache.locate(f"{stem}_{tag}.so")
    except _kernel_cache.CacheError as err:
        raise KernelBuildError(str(err)) from None
    if note is not None:
        warnings.warn(f"sparse_rtrl: {note}; the CPU kernels are compiled into a private temporary "
                      f"folder for this process only (set {_kernel_cache.CACHE_ENV} to a folder of "
                      "your own and run `sparse-rtrl build-kernels` to compile them once)",
                      RuntimeWarning, stacklevel=2)
    if not os.path.exists(path):
        cc = _compiler()
        if cc is None:
            raise KernelBuildError("no C compiler found: install gcc (or clang), or set CC")
        try:
            with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
                src, out = os.path.join(tmp, f"{stem}.c"), os.path.join(tmp, f"{stem}.so")
                with open(src, "w") as f:
                    f.write(code)
                subprocess.run([cc, *flags, src, "-o", out, *libs], check=True, capture_output=True, timeout=300)
                os.replace(out, path)  # atomic: concurrent builders never see a partial file
        except subprocess.CalledProcessError as err:
            detail = (err.stderr or b"").decode(errors="replace").strip()[:500]
            raise KernelBuildError(f"the C compiler {cc} failed: {detail}") from None
        except (OSError, subprocess.SubprocessError) as err:
            raise KernelBuildError(f"building the kernels failed: {type(err).__name__}: {err}") from None
    try:
        _kernel_cache.check_private(path, folder=False)
    except _kernel_cache.CacheError as err:
        raise KernelBuildError(str(err)) from None
    return path


def _load(path: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(path)
    except OSError as err:
        raise KernelBuildError(f"cannot load {path} ({err}); delete it and run `sparse-rtrl "
                               "build-kernels`") from None
    return declare(lib)


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """``lib`` (a build of ``csrc/sparse_kernels.c``) with its functions' C signatures set."""
    for T in ("float", "double"):
        rows = getattr(lib, f"rows_{T}")
        rows.argtypes = [_PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _I64, _INT]
        rows.restype = _INT
        cols = getattr(lib, f"columns_{T}")
        cols.argtypes = [_PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _I64, _INT, _PTR, _I64, _I64, _I64, _PTR, _I64, _I64, _PTR, _INT]
        cols.restype = _INT
        grad = getattr(lib, f"gradient_{T}")
        grad.argtypes = [_PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _I64, _I64, _INT]
        grad.restype = _INT
    lib.top_k_float.argtypes = [_PTR, _I64, _I64, _I64, _PTR, _INT]
    lib.top_k_float.restype = _INT
    return lib


def get() -> ctypes.CDLL | None:
    """The compiled library, or None (callers then use pure torch). Never raises; the first
    fallback not asked for by ``SPARSE_RTRL_NO_EXTENSION`` warns once, naming the cause."""
    global _lib, _tried, reason
    if disabled():
        reason = "disabled by SPARSE_RTRL_NO_EXTENSION (or settings.using(compiled_kernels=False))"
        return None
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            try:
                _lib = _load(build())
                reason = None
            except Exception as exc:  # no compiler, a build, cache or load error: use pure torch
                _lib = None
                reason = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
                warnings.warn(f"sparse_rtrl: the compiled CPU kernels are unavailable ({reason}); the "
                              "sparse products use the slower pure-torch path. Fix the cause and run "
                              "`sparse-rtrl build-kernels` (or set SPARSE_RTRL_NO_EXTENSION=1 to choose "
                              "the torch path and silence this)", RuntimeWarning, stacklevel=2)
            _tried = True
    return _lib


def plain(t: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether ``t`` is an ordinary ``dtype`` tensor whose memory holds its values: not a
    subclass (fake or traced tensors), not wrapped by ``torch.func`` transforms, no lazy
    negation or conjugation bit, and not while ``torch.compile`` traces. Only such tensors may be
    read through their data pointer."""
    return (type(t) is torch.Tensor and t.dtype == dtype and not t.is_neg() and not t.is_conj()
            and not torch._C._functorch.is_functorch_wrapped_tensor(t) and not torch.compiler.is_compiling())


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels apply to these tensors (CPU, float32/float64, built)."""
    for t in tensors:
        if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
            return False
    return get() is not None


def _ptr(t: torch.Tensor, dtype: torch.dtype) -> int:
    if t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous():
        raise ValueError(f"the compiled kernels need contiguous {dtype} CPU tensors, got {t.dtype} "
                         f"on {t.device} (contiguous: {t.is_contiguous()})")
    return t.data_ptr()


def rows(index: torch.Tensor, weight: torch.Tensor, M: torch.Tensor, width: int) -> None:
    """M ``(S, N, P)`` ← Σ_r weight[:, :, r]·M[index[:, :, r]] per stream s, in place.

    index ``(S, N, k)`` int64 in [0, N), weight ``(S, N, k)`` of M's dtype; all contiguous.
    """
    S, N, P = M.shape
    k = index.shape[-1]
    if tuple(index.shape) != (S, N, k) or tuple(weight.shape) != (S, N, k):
        raise ValueError(f"index and weight must be {(S, N, k)}, got {tuple(index.shape)} and {tuple(weight.shape)}")
    fn = getattr(_lib, "rows_float" if M.dtype == torch.float32 else "rows_double")
    if fn(_ptr(index, torch.int64), _ptr(weight, M.dtype), _ptr(M, M.dtype), S, N, k, P,
          max(1, min(width, P)), torch.get_num_threads()):
        raise MemoryError("the row-gather kernel could not allocate its scratch block")


def columns(columns: torch.Tensor, weight: torch.Tensor, M: torch.Tensor,
            diagonal: torch.Tensor | None, width: int, stream: bool = False,
            immediate: list[tuple[int, torch.Tensor]] | None = None, delta: torch.Tensor | None = None,
            members: int = 1) -> torch.Tensor | None:
    """M ``(S, N, P)`` ← diag(diagonal)·M + weight·M[columns] (+ Ī) per stream, in place.

    columns ``(S, k)`` int64, weight ``(S, N, k)``, diagonal ``(S, N)`` or None; contiguous.
    ``stream`` (used without a diagonal only): write M by stores that bypass the cache, so M
    is written without first being read — worth it only when M does not fit in the cache.
    ``immediate``: a unit-local Ī added in the same pass, one (first column, values C_p) per
    parameter block in column order, C_p ``(S, halves, gates, n, L_p)`` contiguous of M's
    dtype, placed as ``influence.UnitLocalImmediate.add_to_dense`` places it.
    ``delta`` ``(S, H)`` of M's dtype, contiguous: also return g ``(members, P)`` =
    Σ_b Σ_{i<H} delta[e·B + b, i]·M_new[e·B + b, i] (B = S / members), formed in the same pass.
    """
    S, N, P = M.shape
    k = columns.shape[-1]
    if tuple(columns.shape) != (S, k) or tuple(weight.shape) != (S, N, k):
        raise ValueError(f"columns and weight must be {(S, k)} and {(S, N, k)}, got "
                         f"{tuple(columns.shape)} and {tuple(weight.shape)}")
    if diagonal is not None and tuple(diagonal.shape) != (S, N):
        raise ValueError(f"diagonal must be {(S, N)}, got {tuple(diagonal.shape)}")
    fn = getattr(_lib, "columns_float" if M.dtype == torch.float32 else "columns_double")
    diag = None if diagonal is None else _ptr(diagonal, M.dtype)
    halves, gates, table = 1, 1, None
    if immediate:
        halves, gates, n = immediate[0][1].shape[1:4]
        for offset, values in immediate:
            if values.shape[:4] != (S, halves, gates, n) or halves * n != N or values.dim() != 5:
                raise ValueError(f"immediate values must be (S, halves, gates, n, L) with S = {S} and "
                                 f"halves·n = {N}, got {tuple(values.shape)}")
        table = torch.tensor([[offset, values.shape[-1], _ptr(values, M.dtype)] for offset, values in immediate],
                             dtype=torch.int64)
    g, H = None, 0
    if delta is not None:
        H = delta.shape[-1]
        if tuple(delta.shape) != (S, H) or H > N or S % members:
            raise ValueError(f"delta must be (S, H) = ({S}, H ≤ {N}) with S a multiple of members = "
                             f"{members}, got {tuple(delta.shape)}")
        g = M.new_empty(members, P)
    if fn(_ptr(columns, torch.int64), _ptr(weight, M.dtype), diag, _ptr(M, M.dtype), S, N, k, P,
          max(1, min(width, P)), int(stream), None if table is None else table.data_ptr(),
          0 if table is None else len(immediate), halves, gates,
          None if delta is None else _ptr(delta, M.dtype), H, S // members, None if g is None else g.data_ptr(),
          torch.get_num_threads()):
        raise MemoryError("the column-gather kernel could not allocate its buffer")
    return g


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor | None:
    """``scores.topk(k, dim=-1).indices`` for contiguous float32 CPU scores (1 ≤ k ≤ n), or
    None when the kernel does not answer (a buffer not allocated, n ≥ 2³¹): the caller then
    asks ``torch.topk``. Rows whose answer depends on how ties are broken (equal scores at or
    inside the k-th place, NaN, −inf among the k largest) are recomputed here by
    ``torch.topk`` (each row's answer is its own), so the indices are always ``torch.topk``'s.
    ≈ 10× faster than ``torch.topk`` for a few of 64 on fresh random scores (its introselect
    mispredicts its branches there)."""
    n = scores.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] for rows of {n} scores, got {k}")
    out = torch.empty(*scores.shape[:-1], k, dtype=torch.int64)
    rows = scores.numel() // n
    refused = _lib.top_k_float(_ptr(scores, torch.float32), rows, n, k, out.data_ptr(), torch.get_num_threads())
    if refused < 0:
        return None
    if refused:
        flat, index = scores.reshape(rows, n), out.view(rows, k)
        redo = index[:, 0] < 0
        index[redo] = flat[redo].topk(k, dim=-1).indices
    return out


def gradient(M: torch.Tensor, delta: torch.Tensor, width: int) -> torch.Tensor:
    """g ``(E, P)`` = Σ_b Σ_{h<H} delta[e, b, h]·M[e, b, h] for M ``(E, B, N, P)`` and delta
    ``(E, B, H)`` of M's dtype, both contiguous: one read pass over the first H rows of M."""
    E, B, N, P = M.shape
    H = delta.shape[-1]
    if tuple(delta.shape) != (E, B, H) or H > N:
        raise ValueError(f"delta must be (E, B, H) = {(E, B)} + (H ≤ {N},), got {tuple(delta.shape)}")
    out = M.new_empty(E, P)
    fn = getattr(_lib, "gradient_float" if M.dtype == torch.float32 else "gradient_double")
    if fn(_ptr(M, M.dtype), _ptr(delta, M.dtype), out.data_ptr(), E, B, N, H, P, max(1, min(width, P)),
          torch.get_num_threads()):
        raise MemoryError("the gradient kernel could not allocate its row table")
    return out
