"""Online truncated backpropagation through time — what practitioners use instead of RTRL."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigurationError
from .base import AbstractWindowRule, RuleState, TransportContext

Tensor = torch.Tensor


@dataclass
class WindowState(RuleState):
    """The last T − 1 inputs and the online state before each: ``(E, B, T−1, I)``,
    ``(E, B, T−1, N)``; the first ``filled`` slots are in use, oldest first."""

    inputs: Tensor
    states: Tensor
    filled: int


@dataclass(frozen=True)
class TBPTT(AbstractWindowRule):
    """g_t = ∂L_t/∂θ through the last T steps only, with the current parameters:

        s_{t−T} fixed (the online state),  s_τ = f(θ_t, s_{τ−1}, x_τ) for τ = t−T+1 … t,
        g_t = ∂L_t(h_t)/∂θ_t by autograd over those T steps.

    O(T·P) work and O(T·N) memory per step and stream. T = 1 is the immediate rule; T at
    least the sequence length is exact BPTT of L_t (full RTRL's per-step gradient when the
    parameters do not change). The learner returns an h_t that carries the window's graph.
    """

    window: int = 16
    name = "tbptt"

    def __post_init__(self):
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            raise ConfigurationError(f"the TBPTT window must be an int ≥ 1, got {self.window!r}")

    def init(self, ctx: TransportContext) -> WindowState:
        E, B, C = ctx.members, ctx.batch, self.window - 1
        kw = {"dtype": ctx.dtype, "device": ctx.device}
        return WindowState(ctx, torch.zeros(E, B, C, ctx.input_size, **kw),
                           torch.zeros(E, B, C, ctx.state_size, **kw), 0)

    def reset(self, state: WindowState) -> None:
        state.filled = 0

    def forward(self, state: WindowState, cell, params: list[Tensor], s_prev: Tensor, x: Tensor) -> Tensor:
        """s_t recomputed through the window with ``params`` (autograd graph kept)."""
        f = state.filled
        s = state.states[:, :, 0] if f else s_prev
        for tau in range(f):
            s = cell.step(params, s, state.inputs[:, :, tau])
        return cell.step(params, s, x)

    def commit(self, state: WindowState, s_prev: Tensor, x: Tensor) -> None:
        """Push (x_t, s_{t−1}) into the window after a successful step."""
        C = self.window - 1
        if C == 0:
            return
        # new tensors, never in-place: the current step's graph still reads the old ones
        if state.filled == C:
            state.inputs = torch.roll(state.inputs, -1, dims=2)
            state.states = torch.roll(state.states, -1, dims=2)
            state.filled -= 1
        else:
            state.inputs, state.states = state.inputs.clone(), state.states.clone()
        state.inputs[:, :, state.filled] = x
        state.states[:, :, state.filled] = s_prev
        state.filled += 1
