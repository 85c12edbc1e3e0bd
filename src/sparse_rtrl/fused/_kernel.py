"""The compiled small work of a fused step (``csrc/fused_step.c``), loaded through ctypes.

Built on first use by the system C compiler into the library's private kernel cache (the
same folder, checks and fallback as the transport kernels: ``transport/_kernel_cache.py``);
:func:`get` returns None when it cannot be built or loaded, or when the compiled kernels are
switched off (``SPARSE_RTRL_NO_EXTENSION=1``), and the fused step then runs its torch path.
"""

from __future__ import annotations

import ctypes
import threading
from importlib import resources

from ..transport import _cpu_kernels

_D, _I64, _INT, _PTR = ctypes.c_double, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
reason: str | None = None  # why :func:`get` returned None, for messages


def source() -> str:
    return resources.files(__package__).joinpath("csrc", "fused_step.c").read_text()


def build() -> str:
    """Compile into the cache (if not there yet); the library's path. Raises on failure."""
    flags = ["-O3", "-std=c99", "-fopenmp-simd", "-fPIC", "-shared", *_cpu_kernels._cpu_flags()]
    return _cpu_kernels.compile_library(source(), "sparse_rtrl_fused", flags, ("-lm",))


def _load(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    for T in ("float", "double"):
        pro = getattr(lib, f"prologue_{T}")
        pro.argtypes = [_PTR] * 15 + [_I64] * 3 + [_INT, _D, _INT, _D, _INT]
        pro.restype = _D
        loc = getattr(lib, f"add_local_{T}")
        loc.argtypes = [_PTR, _INT, _PTR, _PTR, _I64, _I64, _INT]
        loc.restype = None
        check = getattr(lib, f"check_{T}")
        check.argtypes = [_PTR] * 5 + [_I64] * 3 + [_INT]
        check.restype = _INT
        update = getattr(lib, f"update_{T}")
        update.argtypes = [_PTR] * 11 + [_I64] * 3 + [_INT] + [_D] * 6
        update.restype = None
    return lib


def get() -> ctypes.CDLL | None:
    """The compiled library, or None (the torch path is then used). Never raises."""
    global _lib, _tried, reason
    if _cpu_kernels.disabled():
        reason = "disabled by SPARSE_RTRL_NO_EXTENSION (or settings.using(compiled_kernels=False))"
        return None
    if not _tried:
        with _lock:
            if not _tried:
                try:
                    _lib, reason = _load(build()), None
                except Exception as exc:  # no compiler, a build, cache or load error
                    _lib, reason = None, f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                _tried = True
    return _lib
