"""Choosing the kept paths K_t of sparse transport.

Row granularity keeps, in every row i of J, k source units S_i; column granularity keeps one
set S of k source units for all rows. Scores decide which: uniform noise ("random"), |J_ij|
("magnitude": the largest), −|J_ij| ("adversarial": the smallest). Noise comes from one seeded
generator per ensemble member, drawn in float32 whatever the model's dtype, so float32 and
float64 runs of the same seed keep the same paths.
"""

from __future__ import annotations

import torch

from . import _cpu_kernels
from .base import Generators

Tensor = torch.Tensor

SELECTIONS = ("random", "magnitude", "adversarial")


def member_noise(gens: Generators, shape: tuple[int, ...], device) -> Tensor:
    """U[0, 1) noise ``(E, *shape)``, member e drawn from generator e."""
    return torch.stack([torch.rand(shape, generator=g, device=device) for g in gens.items])


def row_scores(selection: str, J: Tensor, gens: Generators, keep_diagonal: bool) -> Tensor:
    """Scores ``(E, B, N, N)``; the diagonal is excluded (−inf) when it is kept anyway."""
    E, B, N, _ = J.shape
    if selection == "random":
        scores = member_noise(gens, (B, N, N), J.device)
    elif selection == "magnitude":
        scores = J.abs().float()
    else:
        scores = -J.abs().float()
    if keep_diagonal:
        scores = scores.clone()
        scores.diagonal(dim1=-2, dim2=-1).fill_(float("-inf"))
    return scores


def column_scores(selection: str, J: Tensor, gens: Generators) -> Tensor:
    """Scores ``(E, B, N)`` of the source units; magnitude = column ℓ1 norm Σ_i |J_ij|."""
    E, B, N, _ = J.shape
    if selection == "random":
        return member_noise(gens, (B, N), J.device)
    norms = J.abs().sum(dim=-2).float()
    return norms if selection == "magnitude" else -norms


def top_k(scores: Tensor, k: int) -> Tensor:
    """Indices of the k largest scores along the last dimension, largest first (uniform
    k-subsets for noise): ``torch.topk``'s, computed by the compiled kernel on the CPU when it
    is built (the same indices; rows whose answer would hang on tie-breaking go to
    ``torch.topk``)."""
    if (scores.dim() > 0 and 0 < k <= scores.shape[-1] and _cpu_kernels.plain(scores, torch.float32)
            and _cpu_kernels.usable(scores)):
        index = _cpu_kernels.top_k(scores.contiguous(), k)
        if index is not None:
            return index
    return scores.topk(k, dim=-1).indices


def with_diagonal(index: Tensor) -> Tensor:
    """Append each row's own index i to its kept sources: ``(E, B, N, k)`` → ``(..., k + 1)``."""
    E, B, N, _ = index.shape
    own = torch.arange(N, device=index.device).view(1, 1, N, 1).expand(E, B, N, 1)
    return torch.cat([index, own], dim=-1)


def rows_to_mask(index: Tensor, N: int) -> Tensor:
    """Dense 0/1 mask K ``(E, B, N, N)`` from row indices ``(E, B, N, k)``."""
    mask = torch.zeros(*index.shape[:-1], N, dtype=torch.bool, device=index.device)
    return mask.scatter_(-1, index, True)


def columns_to_mask(columns: Tensor, N: int, keep_diagonal: bool) -> Tensor:
    """Dense mask ``(E, B, N, N)`` with K[:, S] = 1 (and K_ii = 1 if the diagonal is kept)."""
    E, B, _ = columns.shape
    cols = torch.zeros(E, B, N, dtype=torch.bool, device=columns.device).scatter_(-1, columns, True)
    mask = cols.unsqueeze(-2).expand(E, B, N, N).clone()
    if keep_diagonal:
        mask.diagonal(dim1=-2, dim2=-1).fill_(True)
    return mask
