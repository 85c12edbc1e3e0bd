"""A·M by oneDNN, the exact float32 GEMM torch ships beside its BLAS.

On CPU in float32 torch's BLAS (MKL) takes its AVX2 path on AMD processors, about half of what
the machine can do for the products of RTRL (an N × N matrix against an N × P one, P ≫ N);
oneDNN picks its kernel by instruction set and reaches about twice the rate. Its entry point
here, ``torch.ops.mkldnn._linear_pointwise(x, w, …) = x·wᵀ`` (the op torch.compile's CPU
backend emits for a linear layer), computes the same float32 products as the BLAS (no
reduced-precision mode); :func:`onednn_works` checks it once against ``torch.mm`` before it is
trusted. The learner's full RTRL (:func:`.kernels.matmul_`) and the fused step
(:mod:`sparse_rtrl.fused.matmul`) use it; float64, CUDA or a torch without oneDNN take
``torch.mm``/``bmm``.
"""

from __future__ import annotations

import functools

import torch

Tensor = torch.Tensor


@functools.cache
def onednn_works() -> bool:
    """Whether torch's oneDNN linear op exists and agrees with ``torch.mm`` on a test product
    (and on a second one after its weight was changed in place, so nothing is cached by address)."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        a, w = torch.randn(37, 8, generator=g), torch.randn(8, 8, generator=g)
        first = op(a, w, None, "none", [], "")
        ok = bool(torch.allclose(first, a @ w.t(), rtol=1e-5, atol=1e-6))
        w.mul_(-2.0)
        second = op(a, w, None, "none", [], "")
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    return ok and bool(torch.allclose(second, a @ w.t(), rtol=1e-5, atol=1e-6))


def usable() -> bool:
    """:func:`onednn_works`, and oneDNN not switched off (``torch.backends.mkldnn.enabled``)."""
    return bool(torch.backends.mkldnn.enabled) and onednn_works()


def linear(x: Tensor, w: Tensor) -> Tensor:
    """x·wᵀ by oneDNN (a new tensor); only where :func:`usable`."""
    return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
