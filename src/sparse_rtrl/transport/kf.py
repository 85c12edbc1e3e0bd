"""Kronecker-factored RTRL (Mujika, Meier & Steger, NeurIPS 2018), for the vanilla cell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ConfigurationError
from .base import AbstractTransport, Generators, RuleState, TransportContext, member_seeds
from .noise import member_signs

Tensor = torch.Tensor

_VANILLA_BLOCKS = (("weight_ih", "weight_hh", "bias_ih", "bias_hh"), ("weight_ih", "weight_hh"))
_KNOWN = {(2, 4): "an LSTM (2 state halves, 4 gates)", (1, 3): "a GRU (3 gates)"}


@dataclass
class KFState(RuleState):
    """The Kronecker factors of M̃ = u ⊗ A, per member and stream."""

    u: Tensor  # (E, B, m), m = I + n (+ 1 with biases)
    A: Tensor  # (E, B, n, n)
    generators: Generators


@dataclass(frozen=True, eq=False)
class KF(AbstractTransport):
    """M_t ≈ M̃_t = u_t ⊗ A_t, i.e. ∂h_t,i/∂W_jl ≈ u_t[l]·A_t[i, j], unbiased:

        x̂_t = [x_t; h_{t−1}; 1],   D_t = diag(α φ'(z_t))      (so Ī_t = x̂_t ⊗ D_t exactly)
        p1 = √((‖J_t A_{t−1}‖ + ε) / (‖u_{t−1}‖ + ε)),   p2 = √((‖D_t‖ + ε) / (‖x̂_t‖ + ε)),
        c ∈ {±1} a random sign,
        u_t = p1·u_{t−1} + c·p2·x̂_t,      A_t = J_t A_{t−1}/p1 + c·D_t/p2,
        g_t = (A_tᵀ ∂L_t/∂h_t) ⊗ u_t.

    E[u_t ⊗ A_t] = u_{t−1} ⊗ J_t A_{t−1} + x̂_t ⊗ D_t = J_t M̃_{t−1} + Ī_t: the two cross terms
    carry the factor c and vanish in expectation. The paper draws two signs c1, c2; only
    their product enters u_t ⊗ A_t, so one sign gives the same estimator. p1, p2 balance the
    factors' norms (the paper's variance-minimising choice); ε keeps them finite at the start.
    The constant 1 in x̂ carries both bias vectors (their exact influences are equal). Work
    O(n³) per step and stream (J·A), memory O(n²).

    Only the vanilla cell has Ī = x̂ ⊗ D (one gate, one state half); other cells raise
    :class:`~sparse_rtrl.errors.ConfigurationError`.

    Options:
        epsilon: ε in p1 and p2.
        seed: the generator's seed (member e of an ensemble uses seed + e, or seed[e]);
            every stream and member draws its own sign.
    """

    epsilon: float = 1e-7
    seed: int | Sequence[int] = 0

    name = "kf"

    def __post_init__(self):
        if not float(self.epsilon) > 0.0:
            raise ConfigurationError(f"KF-RTRL's epsilon must be > 0 (it keeps p1, p2 finite), got {self.epsilon}")

    def check_context(self, ctx: TransportContext) -> None:
        s = ctx.structure
        if s is not None and (s.halves, s.gates) == (1, 1) and ctx.layout.names in _VANILLA_BLOCKS:
            return
        what = "a FunctionalCell" if s is None else _KNOWN.get((s.halves, s.gates), "this cell")
        raise ConfigurationError(
            f"KF-RTRL supports only the vanilla cell (sparse_rtrl.cells.VanillaRNN or "
            f"torch.nn.RNNCell), whose immediate influence is one Kronecker product x̂ ⊗ D; "
            f"got {what}. Use transport='uoro' or 'snap1' for other cells"
        )

    def init(self, ctx: TransportContext) -> KFState:
        self.check_context(ctx)
        E, B, n = ctx.members, ctx.batch, ctx.state_size
        m = sum(b.shape[-1] for b in ctx.layout.blocks[:2]) + (len(ctx.layout.blocks) > 2)
        kw = {"dtype": ctx.dtype, "device": ctx.device}
        gens = Generators(member_seeds(self.seed, E), ctx.device)
        return KFState(ctx, torch.zeros(E, B, m, **kw), torch.zeros(E, B, n, n, **kw), gens)

    def reset(self, state: KFState) -> None:
        state.u.zero_()
        state.A.zero_()

    @staticmethod
    def _inputs(state: KFState, immediate) -> Tensor:
        """x̂_t = [x_t; h_{t−1}; 1] (no 1 without biases), ``(E, B, m)``."""
        parts = [immediate.u[0], immediate.u[1]]
        if state.u.shape[-1] > parts[0].shape[-1] + parts[1].shape[-1]:
            parts.append(torch.ones_like(parts[0][..., :1]))
        return torch.cat(parts, dim=-1)

    def update(self, state: KFState, derivs) -> None:
        ctx = state.ctx
        immediate = derivs.immediate
        D = immediate.d[0][:, :, 0, 0]  # (E, B, n): α φ'(z), the vanilla cell's only gate
        x_hat = self._inputs(state, immediate)
        JA = torch.matmul(derivs.jacobian, state.A)
        c = member_signs(state.generators, (ctx.batch,), ctx.dtype, ctx.device)[..., None]
        eps = float(self.epsilon)

        def norm(t: Tensor, dims) -> Tensor:
            return torch.linalg.vector_norm(t, dim=dims, keepdim=True)

        p1 = ((norm(JA, (-2, -1)) + eps) / (norm(state.u, (-1,)).unsqueeze(-1) + eps)).sqrt()  # (E,B,1,1)
        p2 = ((norm(D, (-1,)) + eps) / (norm(x_hat, (-1,)) + eps)).sqrt()  # (E, B, 1)
        state.u.mul_(p1[..., 0]).add_(c * p2 * x_hat)
        state.A.copy_(JA / p1)
        state.A.diagonal(dim1=-2, dim2=-1).add_(c * D / p2)

    def _full_matrix(self, state: KFState, w: Tensor) -> Tensor:
        """w ⊗ u summed over streams: the gradient of all weights as ``(E, n, m)``."""
        return torch.einsum("ebj,ebl->ejl", w, state.u)

    def _split(self, state: KFState, G: Tensor) -> list[Tensor]:
        """Cut the ``(..., n, m)`` Kronecker layout into the vanilla cell's blocks."""
        I = state.ctx.layout.blocks[0].shape[-1]
        n = state.A.shape[-1]
        blocks = [G[..., :I], G[..., I : I + n]]
        if len(state.ctx.layout.blocks) > 2:
            blocks += [G[..., I + n], G[..., I + n]]
        return blocks

    def gradient(self, state: KFState, delta):
        w = torch.einsum("ebi,ebij->ebj", delta, state.A)
        return [g.contiguous() for g in self._split(state, self._full_matrix(state, w))]

    def influence(self, state: KFState):
        E, B, n, _ = state.A.shape
        dense = torch.einsum("ebij,ebl->ebijl", state.A, state.u)  # M[i, (j, l)]
        return torch.cat([b.reshape(E, B, n, -1) for b in self._split(state, dense)], dim=-1)
