"""The LSTM cell, parameter-compatible with ``torch.nn.LSTMCell`` (gate order i, f, g, o)."""

from __future__ import annotations

import torch
from torch import nn

from ..influence import unit_local_jacobian
from .base import StepDerivatives, UnitLocalCell

Tensor = torch.Tensor


class LSTM(UnitLocalCell):
    """State s = [h; c] (N = 2n).  With z = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh split into
    (z_i, z_f, z_g, z_o):  i, f, o = σ(z_i, z_f, z_o),  g = tanh(z_g),

        c_t = f ⊙ c_{t−1} + i ⊙ g,      h_t = o ⊙ tanh(c_t).

    ∂c_t/∂z = (g·i(1−i), c_{t−1}·f(1−f), i(1−g²), 0),  ∂h_t/∂z = o·tanh'(c_t)·∂c_t/∂z except
    ∂h_t/∂z_o = tanh(c_t)·o(1−o);  besides W_hh, J_t has the local terms ∂c_t/∂c_{t−1} = f and
    ∂h_t/∂c_{t−1} = o·tanh'(c_t)·f.  The output h is the first half of the state.
    """

    gates = 4
    halves = 2
    name = "lstm"
    torch_type = nn.LSTMCell
    fused_type = nn.LSTM

    def _gates(self, params, h, x):
        w_ih, w_hh, b_ih, b_hh = self._unpack(params)
        z = self._affine(x, w_ih, b_ih) + self._affine(h, w_hh, b_hh)
        zi, zf, zg, zo = z.chunk(4, dim=-1)
        return torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo)

    def step(self, params, state, x):
        n = self.hidden_size
        h, c = state[..., :n], state[..., n:]
        i, f, g, o = self._gates(params, h, x)
        c_new = f * c + i * g
        return torch.cat([o * torch.tanh(c_new), c_new], dim=-1)

    def step_with_derivatives(self, params, state, x, jacobian=True):
        n = self.hidden_size
        h, c = state[..., :n], state[..., n:]
        i, f, g, o = self._gates(params, h, x)
        c_new = f * c + i * g
        tc = torch.tanh(c_new)
        h_new = o * tc
        dc = torch.stack([g * i * (1 - i), c * f * (1 - f), i * (1 - g * g), torch.zeros_like(o)], 2)
        out_gain = (o * (1 - tc * tc)).unsqueeze(2)  # ∂h_t/∂c_t
        dh = dc * out_gain
        dh[:, :, 3] = tc * o * (1 - o)
        d = torch.stack([dh, dc], dim=2)  # (E, B, S=2, G=4, n)
        J = None
        if jacobian:
            zero = torch.zeros_like(f)
            local = torch.stack(
                [torch.stack([zero, out_gain[:, :, 0] * f], 2), torch.stack([zero, f], 2)], 2
            )  # (E, B, S, S, n): [[∂h/∂h, ∂h/∂c], [∂c/∂h, ∂c/∂c]] beyond W_hh
            J = unit_local_jacobian(d, params[1], local)
        state_new = torch.cat([h_new, c_new], dim=-1)
        return StepDerivatives(state_new, J, self._immediate(d, d, x, h))

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None):
        """Same call as ``torch.nn.LSTMCell``: returns (h_t, c_t)."""
        state = None if hx is None else torch.cat(hx, dim=-1)
        s = self.forward_state(input, state)
        n = self.hidden_size
        return s[..., :n], s[..., n:]
