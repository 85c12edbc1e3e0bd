"""SnAp-1: RTRL kept on the sparsity pattern of the immediate influence (Menick et al.,
ICLR 2021)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigurationError
from ..influence import DenseInfluence, local_blocks
from .base import AbstractTransport, RuleState, TransportContext
from .kernels import matmul_
from .trace import pattern_zeros

Tensor = torch.Tensor


@dataclass
class SnapState(RuleState):
    """M on the pattern Π, and Π itself when M is stored densely."""

    influence: object  # UnitLocalInfluence (compressed) or DenseInfluence
    pattern: Tensor  # (E, N, P) bool for a dense M; empty (0,) for the compressed form


@dataclass(frozen=True, eq=False)
class SnAp1(AbstractTransport):
    """M_t = Π ⊙ (J_t·M_{t−1} + Ī_t), Π the sparsity pattern of Ī (the entries a parameter
    reaches in one step).

    Torch cells (VanillaRNN, LSTM, GRU): Π is the unit-local pattern — entry ((a, i), p) with
    p a parameter of unit i's pre-activations — and M is stored compressed. There
    Π ⊙ (J·M) only reads the per-unit S×S diagonal blocks of J (S = 1, or 2 for the LSTM's
    [h; c]), so the step is O(S²·P) work and O(S·P) memory per stream: diag(J)·M of SPEC §2.2.
    For the LSTM this pattern also holds the c-rows of the output-gate parameters, where Ī
    is zero but the unit's own h → c path fills M after one step; pass
    ``pattern=detect_pattern(cell)`` for the strict nonzero pattern of Ī instead.

    Other cells (FunctionalCell, dense Ī), ``pattern=None``: Π is learned from the stream as
    the union of the nonzeros of Ī seen so far (per ensemble member, over its streams):
    Π_t = Π_{t−1} ∪ nz(Ī_t). Ī's structural nonzeros are generically nonzero, so Π reaches
    the structural pattern within a step or two (at s_0 = 0 the entries ∝ s_{t−1} appear at
    step 2; M is 0 there at step 1 anyway). Π survives ``reset_state``. M is dense and the
    product J·M is a dense O(N²P) one (an autodiff cell already pays O(N·P) per step for Ī).

    Options:
        pattern: None (the above), or a fixed ``(N, P)`` bool tensor Π (e.g. from
            :func:`detect_pattern`), applied to a dense M with any cell.
    """

    pattern: Tensor | None = None

    name = "snap1"

    def check_context(self, ctx: TransportContext) -> None:
        if self.pattern is None:
            return
        want = (ctx.state_size, ctx.layout.size)
        if not isinstance(self.pattern, Tensor) or tuple(self.pattern.shape) != want:
            got = tuple(self.pattern.shape) if isinstance(self.pattern, Tensor) else type(self.pattern).__name__
            raise ConfigurationError(
                f"a fixed SnAp-1 pattern must be a bool tensor of shape (N, P) = {want}, got {got}; "
                "build it with sparse_rtrl.transport.detect_pattern(cell)"
            )

    def _compressed(self, ctx: TransportContext) -> bool:
        return self.pattern is None and ctx.structure is not None

    def init(self, ctx: TransportContext) -> SnapState:
        self.check_context(ctx)
        if self._compressed(ctx):
            return SnapState(ctx, pattern_zeros(ctx), torch.zeros(0, dtype=torch.bool, device=ctx.device))
        E, N, P = ctx.members, ctx.state_size, ctx.layout.size
        if self.pattern is None:
            pattern = torch.zeros(E, N, P, dtype=torch.bool, device=ctx.device)
        else:
            pattern = self.pattern.to(device=ctx.device, dtype=torch.bool).expand(E, N, P).clone()
        M = DenseInfluence.zeros(ctx.layout, E, ctx.batch, N, ctx.dtype, ctx.device)
        return SnapState(ctx, M, pattern)

    def reset(self, state: SnapState) -> None:
        state.influence.zero_()

    def update(self, state: SnapState, derivs) -> None:
        immediate = derivs.immediate
        if self._compressed(state.ctx):
            state.influence.propagate_(local_blocks(derivs.jacobian, immediate.halves), immediate)
            return
        if self.pattern is None:
            state.pattern |= (immediate.dense() != 0).any(dim=1)
        M = state.influence.values
        matmul_(derivs.jacobian, M)
        immediate.add_to_dense(M)
        M.mul_(state.pattern.unsqueeze(1))

    def gradient(self, state: SnapState, delta):
        return state.influence.gradient(delta)

    def influence(self, state: SnapState):
        return state.influence.dense()


def detect_pattern(cell, probes: int = 4, seed: int = 0) -> Tensor:
    """The nonzeros of Ī_t = ∂s_t/∂θ as an ``(N, P)`` bool tensor, structurally.

    Ī is evaluated at the zero state and input and at ``probes`` random (state, input) pairs
    drawn from N(0, 1) (seeded), for every ensemble member; Π is the union of the nonzeros.
    An entry that is structurally nonzero is zero at a random point with probability 0
    (smooth cells) or far below 2^-probes (piecewise-linear ones), so few probes suffice.
    """
    if probes < 0:
        raise ConfigurationError(f"probes must be ≥ 0, got {probes}")
    params = cell.stacked_parameters()
    p = params[0]
    E, N, I = cell.members, cell.state_size, cell.input_size
    g = torch.Generator(device=p.device).manual_seed(seed)
    s = torch.randn(E, probes + 1, N, generator=g, dtype=p.dtype, device=p.device)
    x = torch.randn(E, probes + 1, I, generator=g, dtype=p.dtype, device=p.device)
    s[:, 0] = 0
    x[:, 0] = 0
    with torch.no_grad():
        immediate = cell.step_with_derivatives(params, s, x, jacobian=False).immediate
    return (immediate.dense() != 0).any(dim=1).any(dim=0)
