"""Any cell, through autodiff: a pure function ``step(params, s, x) -> s'`` or an
``nn.Module`` whose ``forward(x, s)`` returns s'. J_t and Ī_t come from ``torch.func.jacrev``
(vmapped over streams and ensemble members): exact, and slower than the closed forms."""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ..influence import DenseImmediate
from .base import AbstractCell, StepDerivatives

Tensor = torch.Tensor
StepFn = Callable[[dict[str, Tensor], Tensor, Tensor], Tensor]


class FunctionalCell(AbstractCell):
    """s_t = step(θ, s_{t−1}, x_t) with J_t = ∂step/∂s and Ī_t = ∂step/∂θ by ``torch.func``.

    ``step`` sees one stream: s ``(N,)``, x ``(I,)``, and θ as a dict of named tensors
    ``(*shape)``. The hidden output h is ``s[:hidden_size]`` (default: the whole state).

    Build it from a function and its parameters::

        cell = FunctionalCell(step, {"w": torch.randn(8, 8), "u": torch.randn(8, 3)},
                              input_size=3, state_size=8)

    or from a module with :meth:`from_module`. With ``ensemble_size=E`` every parameter has
    a leading dimension E.
    """

    def __init__(
        self,
        step: StepFn,
        params: Mapping[str, Tensor],
        input_size: int,
        state_size: int,
        hidden_size: int | None = None,
        *,
        ensemble_size: int | None = None,
    ):
        super().__init__()
        if not callable(step):
            raise TypeError("step must be a function step(params, s, x) -> s'")
        self._step_fn = step
        self._names = list(params)
        if not self._names:
            raise ValueError("a FunctionalCell needs at least one parameter to learn")
        self.params = nn.ParameterDict(
            {self._key(k): v if isinstance(v, nn.Parameter) else nn.Parameter(v) for k, v in params.items()}
        )
        self.input_size = input_size
        self.state_size = state_size
        self.hidden_size = state_size if hidden_size is None else hidden_size
        if not 0 < self.hidden_size <= state_size:
            raise ValueError(f"hidden_size must lie in [1, {state_size}], got {hidden_size}")
        self.ensemble_size = ensemble_size

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        input_size: int,
        state_size: int,
        hidden_size: int | None = None,
    ) -> "FunctionalCell":
        """Wrap ``module`` (``forward(x, s) -> s'``); its own Parameter objects are learned."""
        named = dict(module.named_parameters())

        def step(params, s, x):
            return functional_call(module, params, (x, s))

        return cls(step, named, input_size, state_size, hidden_size)

    def _parameter_signature(self) -> tuple[int, ...]:
        return tuple(map(id, self.params._parameters.values()))

    def _collect_parameters(self):
        return [(k, self.params[self._key(k)]) for k in self._names]

    def _as_dict(self, params: list[Tensor]) -> dict[str, Tensor]:
        return dict(zip(self._names, params))

    def _one(self, params: dict[str, Tensor], s: Tensor, x: Tensor) -> Tensor:
        out = self._step_fn(params, s, x)
        if out.shape != s.shape:
            raise ValueError(
                f"the cell's step returned shape {tuple(out.shape)} for a state of shape "
                f"{tuple(s.shape)}; it must return the next state, same shape"
            )
        return out

    def step(self, params, state, x):
        over_batch = vmap(self._one, in_dims=(None, 0, 0))
        return vmap(over_batch, in_dims=(0, 0, 0))(self._as_dict(params), state, x)

    def step_with_derivatives(self, params, state, x, jacobian=True):
        def with_aux(p, s, u):
            out = self._one(p, s, u)
            return out, out

        jac = jacrev(with_aux, argnums=(0, 1), has_aux=True)
        over_batch = vmap(jac, in_dims=(None, 0, 0))
        (d_params, J), s_new = vmap(over_batch, in_dims=(0, 0, 0))(self._as_dict(params), state, x)
        E, B, N = state.shape
        layout = self.layout()
        dense = torch.cat([d_params[k].reshape(E, B, N, -1) for k in self._names], dim=-1)
        return StepDerivatives(s_new, J if jacobian else None, DenseImmediate(layout, dense))

    def forward(self, input: Tensor, state: Tensor) -> Tensor:
        """One differentiable step on one stream or a batch: x ``([B,] I)``, s ``([B,] N)``."""
        lead = input.shape[:-1]
        xi = input.reshape(1, -1, self.input_size)
        s = state.reshape(1, -1, self.state_size)
        params = self.transported_parameters()
        if self.ensemble_size is None:
            params = [p.unsqueeze(0) for p in params]
        return self.step(params, s, xi).reshape(*lead, self.state_size)
