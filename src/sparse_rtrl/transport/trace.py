"""Eligibility traces (e-prop/RFLO-like) and the immediate rule, their λ = 0 member."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import ConfigurationError
from ..influence import DenseInfluence, UnitLocalInfluence
from .base import AbstractTransport, RuleState, TransportContext


@dataclass
class TraceState(RuleState):
    trace: UnitLocalInfluence | DenseInfluence


def pattern_zeros(ctx: TransportContext):
    """A zero influence on Ī's pattern: compressed for unit-local cells, dense otherwise."""
    if ctx.structure is not None:
        S, G, n = ctx.structure
        return UnitLocalInfluence.zeros(ctx.layout, ctx.members, ctx.batch, S, G, n, ctx.dtype, ctx.device)
    return DenseInfluence.zeros(ctx.layout, ctx.members, ctx.batch, ctx.state_size, ctx.dtype, ctx.device)


@dataclass(frozen=True)
class Trace(AbstractTransport):
    """M_t = λ·M_{t−1} + Ī_t — the diagonal-only family; O(P) work and memory per stream
    for the torch cells (M stays on Ī's unit-local pattern and is stored compressed).
    """

    decay: float = 0.9
    name = "trace"
    needs_jacobian = False

    def __post_init__(self):
        if not 0.0 <= float(self.decay) <= 1.0:
            raise ConfigurationError(f"trace decay λ must lie in [0, 1], got {self.decay}")

    def init(self, ctx: TransportContext) -> TraceState:
        return TraceState(ctx, pattern_zeros(ctx))

    def reset(self, state: TraceState) -> None:
        state.trace.zero_()

    def update(self, state: TraceState, derivs) -> None:
        state.trace.scale_add_(float(self.decay), derivs.immediate)

    def gradient(self, state: TraceState, delta):
        return state.trace.gradient(delta)

    def influence(self, state: TraceState):
        return state.trace.dense()


@dataclass(frozen=True)
class Immediate(AbstractTransport):
    """M_t = Ī_t (k = 0; "d = 0" in the follow-up paper) — no propagation through time.

    The λ = 0 member of :class:`Trace`, with the same state and arithmetic, but a rule of
    its own with no options (a ``decay`` would be an option it cannot take).
    """

    name = "immediate"
    needs_jacobian = False
    decay: ClassVar[float] = 0.0  # read by code shared with Trace; not an option

    init = Trace.init
    reset = Trace.reset
    update = Trace.update
    gradient = Trace.gradient
    influence = Trace.influence
