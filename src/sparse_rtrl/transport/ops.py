"""The sparse products on M as registered torch operators, so they trace under
``torch.compile(fullgraph=True)``:

* ``sparse_rtrl::gather_rows_(index, weight, M)``: M[i] ← Σ_r weight[i, r]·M[index[i, r]];
* ``sparse_rtrl::gather_columns_(columns, weight, M, diagonal)``:
  M ← J[:, S]·M[S] (+ diag(diagonal)·M), J[:, S] = weight.

Both overwrite M in place (``mutates_args``) and return nothing. The CPU implementation is
:mod:`.kernels`' own dispatch (the compiled kernel when it applies, else pure torch); every
other device gets the pure-torch path, except the row product on CUDA, which runs the Triton
kernel of :mod:`.triton_rows` when ``triton`` is installed; the fake implementation (for tracing) has nothing to
compute, since M keeps its shape. :func:`.kernels.gather_rows_` and
:func:`.kernels.gather_columns_` call these operators while ``torch.compile`` traces, and the
same code directly in eager mode, where the operator's dispatch would add ≈ 12 µs a call
(N = 32, float32, k = 4: 26 µs through the operator, 14 µs through the eager function, 9 µs
for the bare ctypes call; docs/performance.md).
"""

import torch
from torch import Tensor

from . import kernels


@torch.library.custom_op("sparse_rtrl::gather_rows_", mutates_args=("M",))
def gather_rows_(index: Tensor, weight: Tensor, M: Tensor) -> None:
    """M[i] ← Σ_r weight[i, r]·M[index[i, r]] in place, by the Triton kernel (CUDA, triton
    installed) or pure torch (any device)."""
    kernels.gather_rows_impl(index, weight, M, compiled=False)


@gather_rows_.register_kernel("cpu")
def _gather_rows_cpu(index: Tensor, weight: Tensor, M: Tensor) -> None:
    kernels.gather_rows_impl(index, weight, M, kernels.compiled_for(M))


@gather_rows_.register_fake
def _gather_rows_fake(index: Tensor, weight: Tensor, M: Tensor) -> None:
    return None


@torch.library.custom_op("sparse_rtrl::gather_columns_", mutates_args=("M",))
def gather_columns_(columns: Tensor, weight: Tensor, M: Tensor, diagonal: Tensor | None) -> None:
    """M ← weight·M[columns] (+ diag(diagonal)·M) in place, by pure torch (any device)."""
    kernels.gather_columns_impl(columns, weight, M, diagonal, compiled=False)


@gather_columns_.register_kernel("cpu")
def _gather_columns_cpu(columns: Tensor, weight: Tensor, M: Tensor, diagonal: Tensor | None) -> None:
    kernels.gather_columns_impl(columns, weight, M, diagonal, kernels.compiled_for(M))


@gather_columns_.register_fake
def _gather_columns_fake(columns: Tensor, weight: Tensor, M: Tensor, diagonal: Tensor | None) -> None:
    return None
