"""Spectra of the recurrent Jacobians J_t = ∂s_t/∂s_{t−1} along a trajectory (claim C5:
"J is full rank, condition numbers 2.6–6.5").

For each step the singular values σ_1 ≥ … ≥ σ_N ≥ 0 of J_t (float64 SVD) give

    condition number     κ_t = σ_1 / σ_N                        (inf when σ_N = 0)
    effective rank       r_eff = exp(−Σ_i p_i log p_i),  p_i = σ_i / Σ_j σ_j
                         (Roy & Vetterli 2007: a continuous rank, 1 for rank one, N when
                         all σ are equal; 0·log 0 = 0)
    numerical rank       #{i : σ_i > rtol·σ_1}                  (the count above a tolerance)

Example::

    spectra = jacobian_spectra(learner, xs)          # xs (T, I) or (T, B, I)
    spectra.condition.median(), spectra.effective_rank.mean(), spectra.summary()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cells import as_cell
from .cells.base import AbstractCell
from .errors import InputError

Tensor = torch.Tensor


@dataclass(frozen=True)
class JacobianSpectra:
    """Singular values ``(T, E, B, N)`` of J_1 … J_T (float64, descending) and the measures
    derived from them, each ``(T, E, B)``. ``rtol`` is the numerical-rank tolerance."""

    singular_values: Tensor
    rtol: float

    @property
    def condition(self) -> Tensor:
        s = self.singular_values
        return s[..., 0] / s[..., -1]

    @property
    def effective_rank(self) -> Tensor:
        s = self.singular_values
        p = s / s.sum(dim=-1, keepdim=True)
        entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=-1)
        return entropy.exp()

    @property
    def numerical_rank(self) -> Tensor:
        s = self.singular_values
        return (s > self.rtol * s[..., :1]).sum(dim=-1)

    def summary(self) -> dict[str, float]:
        """Medians and ranges over every step, member and stream, as plain floats."""
        kappa, r_eff, rank = self.condition.flatten(), self.effective_rank.flatten(), self.numerical_rank.flatten()
        return {
            "steps": self.singular_values.shape[0],
            "state_size": self.singular_values.shape[-1],
            "condition_median": float(kappa.median()),
            "condition_min": float(kappa.min()),
            "condition_max": float(kappa.max()),
            "effective_rank_mean": float(r_eff.mean()),
            "numerical_rank_min": int(rank.min()),
            "full_rank_fraction": float((rank == self.singular_values.shape[-1]).double().mean()),
        }


def _internal_inputs(cell: AbstractCell, inputs: Tensor) -> Tensor:
    """The stream as ``(T, E, B, I)``."""
    E, I = cell.members, cell.input_size
    ok = isinstance(inputs, Tensor) and inputs.shape[-1:] == (I,) and (
        inputs.dim() in (2, 3) or (inputs.dim() == 4 and inputs.shape[1] == E)
    )
    if not ok:
        ensemble = f", or (T, E={E}, B, {I})" if cell.ensemble_size is not None else ""
        raise InputError(
            f"the stream must be a tensor of shape (T, {I}) or (T, B, {I}){ensemble}, got "
            f"{tuple(getattr(inputs, 'shape', ())) or type(inputs).__name__}"
        )
    if inputs.dim() == 2:
        inputs = inputs.unsqueeze(1)
    if inputs.dim() == 3:
        inputs = inputs.unsqueeze(1).expand(inputs.shape[0], E, *inputs.shape[1:])
    return inputs


def jacobian_spectra(model, inputs: Tensor, state: Tensor | None = None,
                     rtol: float | None = None) -> JacobianSpectra:
    """Singular values of J_t for t = 1 … T along the trajectory driven by ``inputs``.

    Args:
        model: an :class:`~sparse_rtrl.OnlineLearner` (its cell, starting from its current
            state when that state has B streams), or a cell (ours or a torch RNN cell).
        inputs: the stream, ``(T, I)`` or ``(T, B, I)`` (shared by all ensemble members), or
            ``(T, E, B, I)``; converted to the cell's dtype.
        state: the state before the first step, ``(E, B, N)`` or ``(B, N)``; default: the
            learner's current state, else zeros.
        rtol: numerical-rank tolerance relative to σ_1; default N·eps of the cell's dtype
            (the precision J itself is computed in).
    Nothing is learned and the learner is not touched.
    """
    learner_state = getattr(model, "_state", None)
    cell = as_cell(model.cell if hasattr(model, "transport") else model)
    xs = _internal_inputs(cell, inputs)
    T, E, B, _ = xs.shape
    params = cell.stacked_parameters()
    p = params[0]
    xs = xs.to(device=p.device, dtype=p.dtype)
    N = cell.state_size
    if state is None:
        if learner_state is not None and learner_state.shape[1] == B:
            s = learner_state.clone()
        else:
            s = cell.initial_state(B, dtype=p.dtype, device=p.device)
    else:
        s = state.to(device=p.device, dtype=p.dtype).reshape(E, B, N)
    if rtol is None:
        rtol = N * torch.finfo(p.dtype).eps
    values = []
    with torch.no_grad():
        for t in range(T):
            derivs = cell.step_with_derivatives(params, s, xs[t], jacobian=True)
            values.append(torch.linalg.svdvals(derivs.jacobian.to(torch.float64)))
            s = derivs.state
    return JacobianSpectra(torch.stack(values), float(rtol))
