"""The vanilla (Elman) cell with leak α, parameter-compatible with ``torch.nn.RNNCell``."""

from __future__ import annotations

import torch
from torch import nn

from ..influence import unit_local_jacobian
from .base import StepDerivatives, UnitLocalCell

Tensor = torch.Tensor


class VanillaRNN(UnitLocalCell):
    """h_t = (1 − α)·h_{t−1} + α·φ(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh),  φ = tanh (or relu).

    J_t = (1 − α)·I + diag(α φ'(z_t))·W_hh,   Ī_t[i, (j, l)] = δ_ij·α φ'(z_t,i)·[x_t; h_{t−1}; 1]_l.

    Shapes (solo): x ``(I,)`` or ``(B, I)``, h ``(n,)`` or ``(B, n)``; N = n. With α = 1 this is
    exactly ``torch.nn.RNNCell`` (whose ``state_dict`` loads here unchanged).
    """

    gates = 1
    halves = 1
    name = "vanilla"
    torch_type = nn.RNNCell
    fused_type = nn.RNN

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        leak: float = 1.0,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        ensemble_size: int | None = None,
        device=None,
        dtype=None,
    ):
        if not 0.0 < float(leak) <= 1.0:
            raise ValueError(f"leak α must lie in (0, 1], got {leak}")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.leak = float(leak)
        self.nonlinearity = nonlinearity
        super().__init__(
            input_size, hidden_size, bias, ensemble_size=ensemble_size, device=device, dtype=dtype
        )

    def options(self) -> dict:
        return {**super().options(), "leak": self.leak, "nonlinearity": self.nonlinearity}

    def _fused_options(self) -> dict | None:
        if self.leak != 1.0:
            return None  # nn.RNN has no leak
        return {**super()._fused_options(), "nonlinearity": self.nonlinearity}

    @classmethod
    def options_of_torch(cls, cell: nn.Module) -> dict:
        return {**super().options_of_torch(cell), "nonlinearity": cell.nonlinearity}

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.leak != 1.0:
            s += f", leak={self.leak}"
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        return s

    def _activation(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if self.nonlinearity == "tanh":
            a = torch.tanh(z)
            return a, 1.0 - a * a
        return torch.relu(z), (z > 0).to(z.dtype)

    def _preactivation(self, params, h, x):
        w_ih, w_hh, b_ih, b_hh = self._unpack(params)
        return self._affine(x, w_ih, b_ih) + self._affine(h, w_hh, b_hh)

    def _mix(self, h: Tensor, a: Tensor) -> Tensor:
        return a if self.leak == 1.0 else (1.0 - self.leak) * h + self.leak * a

    def step(self, params, state, x):
        z = self._preactivation(params, state, x)
        a = torch.tanh(z) if self.nonlinearity == "tanh" else torch.relu(z)
        return self._mix(state, a)

    def step_with_derivatives(self, params, state, x, jacobian=True):
        z = self._preactivation(params, state, x)
        a, slope = self._activation(z)
        E, B, n = z.shape
        d = (self.leak * slope).view(E, B, 1, 1, n)
        J = None
        if jacobian:
            local = torch.full_like(d[:, :, :, 0].unsqueeze(2), 1.0 - self.leak)  # (E,B,1,1,n)
            J = unit_local_jacobian(d, params[1], local)
        return StepDerivatives(self._mix(state, a), J, self._immediate(d, d, x, state))

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """Same call as ``torch.nn.RNNCell``: returns h_t."""
        return self.forward_state(input, hx)
