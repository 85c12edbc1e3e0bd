"""Unbiased Online Recurrent Optimization (Tallec & Ollivier, ICLR 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ConfigurationError
from .base import AbstractTransport, Generators, RuleState, TransportContext, member_seeds
from .noise import member_signs

Tensor = torch.Tensor


@dataclass
class UOROState(RuleState):
    """The rank-1 factors of M̃ = s̃·θ̃ᵀ, per member and stream."""

    s_tilde: Tensor  # (E, B, N)
    theta_tilde: Tensor  # (E, B, P)
    generators: Generators


@dataclass(frozen=True, eq=False)
class UORO(AbstractTransport):
    """M_t ≈ M̃_t = s̃_t θ̃_tᵀ, a rank-1 estimate with E[M̃_t] = J_t M̃_{t−1} + Ī_t:

        ν ∈ {±1}^N random signs,
        ρ0 = √((‖θ̃_{t−1}‖ + ε) / (‖J_t s̃_{t−1}‖ + ε)),   ρ1 = √((‖νᵀĪ_t‖ + ε) / (‖ν‖ + ε)),
        s̃_t = ρ0·J_t s̃_{t−1} + ρ1·ν,      θ̃_t = θ̃_{t−1}/ρ0 + (νᵀĪ_t)/ρ1,
        g_t = (∂L_t/∂s_t · s̃_t)·θ̃_t.

    Since E[ννᵀ] = I, the cross terms vanish in expectation and the estimate is unbiased
    given M̃_{t−1} (hence unconditionally). ρ0, ρ1 balance the two factors' norms, which
    minimises the variance the paper's way; ε keeps them finite at the start (s̃ = θ̃ = 0
    gives ρ0 = 1). Work O(N² + P) per step and stream (J·s̃, and νᵀĪ as one outer product
    per parameter block for the torch cells); memory O(N + P).

    Options:
        epsilon: ε in ρ0 and ρ1.
        seed: the generator's seed (member e of an ensemble uses seed + e, or seed[e]);
            every stream and member draws its own signs.
    """

    epsilon: float = 1e-7
    seed: int | Sequence[int] = 0

    name = "uoro"
    # its norms reduce in another order in a batch, and the random rank-one estimate amplifies
    # that rounding: 1e-3 relative after 60 steps in float32
    member_reproduces_solo = False

    def __post_init__(self):
        if not float(self.epsilon) > 0.0:
            raise ConfigurationError(f"UORO's epsilon must be > 0 (it keeps ρ0, ρ1 finite), got {self.epsilon}")

    def init(self, ctx: TransportContext) -> UOROState:
        E, B, N, P = ctx.members, ctx.batch, ctx.state_size, ctx.layout.size
        kw = {"dtype": ctx.dtype, "device": ctx.device}
        gens = Generators(member_seeds(self.seed, E), ctx.device)
        return UOROState(ctx, torch.zeros(E, B, N, **kw), torch.zeros(E, B, P, **kw), gens)

    def reset(self, state: UOROState) -> None:
        state.s_tilde.zero_()
        state.theta_tilde.zero_()

    def update(self, state: UOROState, derivs) -> None:
        ctx = state.ctx
        nu = member_signs(state.generators, (ctx.batch, ctx.state_size), ctx.dtype, ctx.device)
        Js = torch.matmul(derivs.jacobian, state.s_tilde.unsqueeze(-1)).squeeze(-1)
        nu_I = derivs.immediate.left_product(nu)
        eps = float(self.epsilon)

        def norm(t: Tensor) -> Tensor:
            return torch.linalg.vector_norm(t, dim=-1, keepdim=True)

        rho0 = ((norm(state.theta_tilde) + eps) / (norm(Js) + eps)).sqrt()
        rho1 = ((norm(nu_I) + eps) / (norm(nu) + eps)).sqrt()
        state.s_tilde.copy_(rho0 * Js + rho1 * nu)
        state.theta_tilde.div_(rho0).add_(nu_I / rho1)

    def gradient(self, state: UOROState, delta):
        H = delta.shape[-1]
        weight = torch.einsum("ebh,ebh->eb", delta, state.s_tilde[..., :H])
        return state.ctx.layout.split(torch.einsum("eb,ebp->ep", weight, state.theta_tilde))

    def influence(self, state: UOROState):
        return state.s_tilde.unsqueeze(-1) * state.theta_tilde.unsqueeze(-2)
