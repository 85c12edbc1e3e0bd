"""The GRU cell, parameter-compatible with ``torch.nn.GRUCell`` (gate order r, z, n)."""

from __future__ import annotations

import torch
from torch import nn

from ..influence import unit_local_jacobian
from .base import StepDerivatives, UnitLocalCell

Tensor = torch.Tensor


class GRU(UnitLocalCell):
    """With a = W_ih x_t + b_ih and b = W_hh h_{t−1} + b_hh, each split into (r, z, n) parts:

        r = σ(a_r + b_r),  z = σ(a_z + b_z),  ñ = tanh(a_n + r ⊙ b_n),
        h_t = (1 − z) ⊙ ñ + z ⊙ h_{t−1}.

    The n gate sees W_hh through r, so Ī's hh factor differs from its ih factor there:
    ∂h_t/∂a_n = (1−z)(1−ñ²), ∂h_t/∂b_n = r·∂h_t/∂a_n; ∂h_t/∂(a,b)_r = (1−z)(1−ñ²)·b_n·r(1−r);
    ∂h_t/∂(a,b)_z = (h_{t−1} − ñ)·z(1−z); and J_t = diag(z) + Σ_g diag(∂h_t/∂b_g)·W_hh,g.
    """

    gates = 3
    halves = 1
    name = "gru"
    torch_type = nn.GRUCell
    fused_type = nn.GRU

    def _parts(self, params, h, x):
        w_ih, w_hh, b_ih, b_hh = self._unpack(params)
        a = self._affine(x, w_ih, b_ih)
        b = self._affine(h, w_hh, b_hh)
        ar, az, an = a.chunk(3, dim=-1)
        br, bz, bn = b.chunk(3, dim=-1)
        r = torch.sigmoid(ar + br)
        z = torch.sigmoid(az + bz)
        nt = torch.tanh(an + r * bn)
        return r, z, nt, bn

    def step(self, params, state, x):
        r, z, nt, _ = self._parts(params, state, x)
        return (1 - z) * nt + z * state

    def step_with_derivatives(self, params, state, x, jacobian=True):
        h = state
        r, z, nt, bn = self._parts(params, h, x)
        dn = (1 - z) * (1 - nt * nt)
        dr = dn * bn * r * (1 - r)
        dz = (h - nt) * z * (1 - z)
        d_ih = torch.stack([dr, dz, dn], 2).unsqueeze(2)  # (E, B, 1, 3, n)
        d_hh = torch.stack([dr, dz, dn * r], 2).unsqueeze(2)
        J = None
        if jacobian:
            J = unit_local_jacobian(d_hh, params[1], z.view(*z.shape[:2], 1, 1, -1))
        h_new = (1 - z) * nt + z * h
        return StepDerivatives(h_new, J, self._immediate(d_ih, d_hh, x, h))

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """Same call as ``torch.nn.GRUCell``: returns h_t."""
        return self.forward_state(input, hx)
