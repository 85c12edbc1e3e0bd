"""Exact real-time recurrent learning (Williams & Zipser 1989)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import AbstractTransport, RuleState, TransportContext
from .kernels import delta_rows, matmul_


@dataclass
class DenseState(RuleState):
    """M ``(E, B, N, P)``."""

    M: torch.Tensor


def zeros_like_context(ctx: TransportContext) -> torch.Tensor:
    """A zero dense M ``(E, B, N, P)`` for ``ctx``."""
    shape = (ctx.members, ctx.batch, ctx.state_size, ctx.layout.size)
    return torch.zeros(shape, dtype=ctx.dtype, device=ctx.device)


@dataclass(frozen=True)
class Full(AbstractTransport):
    """M_t = J_t·M_{t−1} + Ī_t — exact; O(N²P) work and O(NP) memory per step and stream.

    With the optimizer not stepping, Σ_t (∂L_t/∂h_t)·M_t is the BPTT gradient of Σ_t L_t.
    """

    name = "full"

    def init(self, ctx: TransportContext) -> DenseState:
        return DenseState(ctx, zeros_like_context(ctx))

    def reset(self, state: DenseState) -> None:
        state.M.zero_()

    def update(self, state: DenseState, derivs) -> None:
        matmul_(derivs.jacobian, state.M)
        derivs.immediate.add_to_dense(state.M)

    def gradient(self, state: DenseState, delta):
        return state.ctx.layout.split(delta_rows(delta, state.M))

    def influence(self, state: DenseState):
        return state.M
