"""Optional fused CPU kernels for the sparse products on M, compiled on first use.

Two loops that PyTorch cannot express in one pass over M:

* ``rows``: M[i] ← Σ_r w[i, r]·M[idx[i, r]] (row-sparse K ⊙ J). M is cut into column blocks
  small enough to stay in cache; each block's N row segments are copied once to a per-thread
  buffer (the one read of M from memory, next rows prefetched), then every row segment of M
  is overwritten by its k-term sum formed from that buffer (the one write): one read and one
  write of M per step, whatever k (the pure-torch path makes ~2k passes over each block).
* ``columns``: M[i] ← d_i·M[i] + Σ_r W[i, r]·M[S_r] (column-sparse J[:, S]·M[S], the kept
  diagonal folded in). Per column block the k source rows are copied to a small buffer,
  then every row is rewritten in place: one pass over M.

Both run in parallel over (stream, column block) with OpenMP, using ``torch.get_num_threads()``
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

_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* out[j] (=|+=) sum_{r<k} w[r] * src[r][j], four sources per pass over out. */
#define DEFINE_WEIGHTED_SUM(T)                                                              \
static void weighted_sum_##T(T *restrict out, const T *const *src, const T *w, int64_t k, \
                             int64_t n, int accumulate) {                                   \
  int64_t r = 0, j;                                                                         \
  if (!accumulate) {                                                                        \
    if (k >= 4) {                                                                           \
      const T *restrict a = src[0], *restrict b = src[1], *restrict c = src[2],             \
              *restrict d = src[3];                                                         \
      const T wa = w[0], wb = w[1], wc = w[2], wd = w[3];                                   \
      for (j = 0; j < n; ++j) out[j] = wa * a[j] + wb * b[j] + wc * c[j] + wd * d[j];       \
      r = 4;                                                                                \
    } else if (k >= 2) {                                                                    \
      const T *restrict a = src[0], *restrict b = src[1];                                   \
      const T wa = w[0], wb = w[1];                                                         \
      for (j = 0; j < n; ++j) out[j] = wa * a[j] + wb * b[j];                               \
      r = 2;                                                                                \
    } else if (k == 1) {                                                                    \
      const T *restrict a = src[0];                                                         \
      const T wa = w[0];                                                                    \
      for (j = 0; j < n; ++j) out[j] = wa * a[j];                                           \
      r = 1;                                                                                \
    } else {                                                                                \
      memset(out, 0, (size_t)n * sizeof(T));                                               \
    }                                                                                       \
  }                                                                                         \
  for (; r + 4 <= k; r += 4) {                                                              \
    const T *restrict a = src[r], *restrict b = src[r + 1], *restrict c = src[r + 2],       \
            *restrict d = src[r + 3];                                                       \
    const T wa = w[r], wb = w[r + 1], wc = w[r + 2], wd = w[r + 3];                         \
    for (j = 0; j < n; ++j) out[j] += wa * a[j] + wb * b[j] + wc * c[j] + wd * d[j];        \
  }                                                                                         \
  for (; r + 2 <= k; r += 2) {                                                              \
    const T *restrict a = src[r], *restrict b = src[r + 1];                                 \
    const T wa = w[r], wb = w[r + 1];                                                       \
    for (j = 0; j < n; ++j) out[j] += wa * a[j] + wb * b[j];                                \
  }                                                                                         \
  for (; r < k; ++r) {                                                                      \
    const T *restrict a = src[r];                                                           \
    const T wa = w[r];                                                                      \
    for (j = 0; j < n; ++j) out[j] += wa * a[j];                                            \
  }                                                                                         \
}

/* M (S, N, P): M[s, i] <- sum_r wt[s, i, r] * M[s, idx[s, i, r]], in place. Per column block,
   the N row segments are first copied to a contiguous per-thread buffer (the one streaming
   read of M), then every row segment of M is rewritten from that copy (the one write). */
#define DEFINE_ROWS(T)                                                                      \
int rows_##T(const int64_t *idx, const T *wt, T *M, int64_t S, int64_t N, int64_t k,      \
             int64_t P, int64_t width, int threads) {                                       \
  const int64_t blocks = (P + width - 1) / width;                                           \
  int failed = 0;                                                                           \
  _Pragma("omp parallel num_threads(threads)")                                              \
  {                                                                                         \
    T *copy = (T *)malloc((size_t)(N * width) * sizeof(T));                                 \
    const T **src = (const T **)malloc((size_t)(k > 0 ? k : 1) * sizeof(T *));              \
    if (!copy || !src) {                                                                    \
      _Pragma("omp atomic write") failed = 1;                                               \
    } else {                                                                                \
      int64_t job;                                                                          \
      _Pragma("omp for schedule(static)")                                                   \
      for (job = 0; job < S * blocks; ++job) {                                              \
        const int64_t s = job / blocks, c0 = (job % blocks) * width;                        \
        const int64_t n = MIN(width, P - c0);                                               \
        T *base = M + s * N * P + c0;                                                       \
        const int64_t *ix = idx + s * N * k;                                                \
        const T *ws = wt + s * N * k;                                                       \
        int64_t i, r;                                                                       \
        for (i = 0; i < N; ++i) {                                                           \
          if (i + 2 < N) /* the next segments' lines in flight while this one is copied */ \
            for (r = 0; r < n; r += 64 / (int64_t)sizeof(T))                                 \
              __builtin_prefetch(base + (i + 2) * P + r, 0, 0);                              \
          memcpy(copy + i * n, base + i * P, (size_t)n * sizeof(T));                        \
        }                                                                                   \
        for (i = 0; i < N; ++i) {                                                           \
          for (r = 0; r < k; ++r) src[r] = copy + ix[i * k + r] * n;                        \
          weighted_sum_##T(base + i * P, src, ws + i * k, k, n, 0);                         \
        }                                                                                   \
      }                                                                                     \
    }                                                                                       \
    free(copy);                                                                             \
    free((void *)src);                                                                      \
  }                                                                                         \
  return failed;                                                                            \
}

/* M (S, N, P): M[s, i] <- diag[s, i] * M[s, i] + sum_r wt[s, i, r] * M[s, cols[s, r]]. */
#define DEFINE_COLUMNS(T)                                                                   \
int columns_##T(const int64_t *cols, const T *wt, const T *diag, T *M, int64_t S,          \
                int64_t N, int64_t k, int64_t P, int64_t width, int threads) {              \
  const int64_t blocks = (P + width - 1) / width;                                           \
  int failed = 0;                                                                           \
  _Pragma("omp parallel num_threads(threads)")                                              \
  {                                                                                         \
    T *picked = (T *)malloc((size_t)((k > 0 ? k : 1) * width) * sizeof(T));                 \
    const T **src = (const T **)malloc((size_t)(k > 0 ? k : 1) * sizeof(T *));              \
    if (!picked || !src) {                                                                  \
      _Pragma("omp atomic write") failed = 1;                                               \
    } else {                                                                                \
      int64_t job, r;                                                                       \
      for (r = 0; r < k; ++r) src[r] = picked + r * width;                                  \
      _Pragma("omp for schedule(static)")                                                   \
      for (job = 0; job < S * blocks; ++job) {                                              \
        const int64_t s = job / blocks, c0 = (job % blocks) * width;                        \
        const int64_t n = MIN(width, P - c0);                                               \
        T *base = M + s * N * P + c0;                                                       \
        const int64_t *cs = cols + s * k;                                                   \
        const T *ws = wt + s * N * k;                                                       \
        int64_t i, j, q;                                                                    \
        for (q = 0; q < k; ++q)                                                             \
          memcpy(picked + q * width, base + cs[q] * P, (size_t)n * sizeof(T));              \
        for (i = 0; i < N; ++i) {                                                           \
          T *restrict out = base + i * P;                                                   \
          if (diag) {                                                                       \
            const T di = diag[s * N + i];                                                   \
            for (j = 0; j < n; ++j) out[j] *= di;                                           \
            weighted_sum_##T(out, src, ws + i * k, k, n, 1);                                \
          } else {                                                                          \
            weighted_sum_##T(out, src, ws + i * k, k, n, 0);                                \
          }                                                                                 \
        }                                                                                   \
      }                                                                                     \
    }                                                                                       \
    free(picked);                                                                           \
    free((void *)src);                                                                      \
  }                                                                                         \
  return failed;                                                                            \
}

DEFINE_WEIGHTED_SUM(float)
DEFINE_WEIGHTED_SUM(double)
DEFINE_ROWS(float)
DEFINE_ROWS(double)
DEFINE_COLUMNS(float)
DEFINE_COLUMNS(double)
"""

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


def build() -> str:
    """Compile the kernels into the cache (if not there yet) and return the library's path.

    Raises :class:`KernelBuildError` naming the cause (no compiler, a compiler error, a
    refused cache folder); :func:`get` is the never-raising form used by the library.
    """
    flags = _flags()
    tag = hashlib.sha1("\0".join([_SOURCE, *flags]).encode()).hexdigest()[:12]
    try:
        path, note = _kernel_cache.locate(f"sparse_rtrl_kernels_{tag}.so")
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
                src, out = os.path.join(tmp, "kernels.c"), os.path.join(tmp, "kernels.so")
                with open(src, "w") as f:
                    f.write(_SOURCE)
                subprocess.run([cc, *flags, src, "-o", out], check=True, capture_output=True, timeout=300)
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
    for T in ("float", "double"):
        rows = getattr(lib, f"rows_{T}")
        rows.argtypes = [_PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _I64, _INT]
        rows.restype = _INT
        cols = getattr(lib, f"columns_{T}")
        cols.argtypes = [_PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _I64, _INT]
        cols.restype = _INT
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
            diagonal: torch.Tensor | None, width: int) -> None:
    """M ``(S, N, P)`` ← diag(diagonal)·M + weight·M[columns] per stream, in place.

    columns ``(S, k)`` int64, weight ``(S, N, k)``, diagonal ``(S, N)`` or None; contiguous.
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
    if fn(_ptr(columns, torch.int64), _ptr(weight, M.dtype), diag, _ptr(M, M.dtype), S, N, k, P,
          max(1, min(width, P)), torch.get_num_threads()):
        raise MemoryError("the column-gather kernel could not allocate its buffer")
