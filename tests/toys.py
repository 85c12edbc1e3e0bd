"""A transport rule and a cell written as user code would write them, outside the package
(used by tests/test_plugins.py; importing this module registers nothing).

The rule is M_t = ½·M_{t−1} + Ī_t (it must learn exactly as the trace rule with λ = ½); the
cell is h_t = sin(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh) with closed-form J_t and Ī_t."""

from dataclasses import dataclass

import torch

from sparse_rtrl.cells import StepDerivatives, UnitLocalCell
from sparse_rtrl.influence import DenseInfluence, UnitLocalInfluence, unit_local_jacobian
from sparse_rtrl.transport import AbstractTransport
from sparse_rtrl.transport.base import RuleState


@dataclass
class HalfState(RuleState):
    M: UnitLocalInfluence | DenseInfluence


@dataclass(frozen=True)
class HalfTrace(AbstractTransport):
    """M_t = ½·M_{t−1} + Ī_t."""

    name = "toy_half_trace"
    needs_jacobian = False

    def init(self, ctx):
        if ctx.structure is not None:
            S, G, n = ctx.structure
            M = UnitLocalInfluence.zeros(ctx.layout, ctx.members, ctx.batch, S, G, n, ctx.dtype, ctx.device)
        else:
            M = DenseInfluence.zeros(ctx.layout, ctx.members, ctx.batch, ctx.state_size, ctx.dtype, ctx.device)
        return HalfState(ctx, M)

    def reset(self, state):
        state.M.zero_()

    def update(self, state, derivs):
        state.M.scale_add_(0.5, derivs.immediate)

    def gradient(self, state, delta):
        return state.M.gradient(delta)

    def influence(self, state):
        return state.M.dense()


class SinRNN(UnitLocalCell):
    """h_t = sin(z_t), z_t = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh; J_t = diag(cos z_t)·W_hh."""

    name = "toy_sin"

    def step(self, params, state, x):
        w_ih, w_hh, b_ih, b_hh = self._unpack(params)
        return torch.sin(self._affine(x, w_ih, b_ih) + self._affine(state, w_hh, b_hh))

    def step_with_derivatives(self, params, state, x, jacobian=True):
        w_ih, w_hh, b_ih, b_hh = self._unpack(params)
        z = self._affine(x, w_ih, b_ih) + self._affine(state, w_hh, b_hh)
        E, B, n = z.shape
        d = torch.cos(z).view(E, B, 1, 1, n)
        J = unit_local_jacobian(d, w_hh, torch.zeros_like(d[:, :, :, 0].unsqueeze(2))) if jacobian else None
        return StepDerivatives(torch.sin(z), J, self._immediate(d, d, x, state))

    def forward(self, input, hx=None):
        return self.forward_state(input, hx)
