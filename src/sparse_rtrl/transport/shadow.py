"""A gradient shadow: exact RTRL carried alongside any rule, to measure how far the rule's
gradient is from the true one on the very trajectory it learns on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigurationError
from .base import AbstractTransport, AbstractWindowRule, RuleState, TransportContext, load_state, state_to_dict

Tensor = torch.Tensor


@dataclass
class Substate:
    """A nested rule's state, saved and loaded through :func:`state_to_dict`."""

    state: Any

    def state_dict(self) -> dict[str, Any]:
        return state_to_dict(self.state)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        load_state(self.state, saved)


class GradientLog:
    """One record per ``backward``: the step it followed and, per ensemble member, the
    cosine and norm ratio of the rule's gradient g against the reference's g*.

    ``steps`` ``(K,)``: number of updates (steps) before the record, counted since the rule
    state was created; ``cosine`` ``(K, E)`` = ⟨g, g*⟩ / (‖g‖‖g*‖) over all transported
    parameters (NaN when either gradient is zero); ``norm_ratio`` ``(K, E)`` = ‖g‖ / ‖g*‖
    (inf or NaN when g* = 0). Float64 whatever the model's dtype.
    """

    def __init__(self, members: int):
        self.members = members
        self._steps: list[int] = []
        self._cosine: list[Tensor] = []
        self._ratio: list[Tensor] = []

    def __len__(self) -> int:
        return len(self._steps)

    def append(self, step: int, cosine: Tensor, ratio: Tensor) -> None:
        self._steps.append(int(step))
        self._cosine.append(cosine.detach().to("cpu", torch.float64))
        self._ratio.append(ratio.detach().to("cpu", torch.float64))

    def _stack(self, rows: list[Tensor]) -> Tensor:
        return torch.stack(rows) if rows else torch.zeros(0, self.members, dtype=torch.float64)

    @property
    def steps(self) -> Tensor:
        return torch.tensor(self._steps, dtype=torch.long)

    @property
    def cosine(self) -> Tensor:
        return self._stack(self._cosine)

    @property
    def norm_ratio(self) -> Tensor:
        return self._stack(self._ratio)

    def clear(self) -> None:
        self._steps, self._cosine, self._ratio = [], [], []

    def state_dict(self) -> dict[str, Tensor]:
        return {"steps": self.steps, "cosine": self.cosine, "norm_ratio": self.norm_ratio}

    def load_state_dict(self, saved: dict[str, Tensor]) -> None:
        self._steps = [int(s) for s in saved["steps"]]
        self._cosine = [row.clone() for row in saved["cosine"]]
        self._ratio = [row.clone() for row in saved["norm_ratio"]]


@dataclass
class ShadowState(RuleState):
    rule: Substate
    reference: Substate
    history: GradientLog
    steps: int = 0

    # The learner hands ``generators`` from an old state to a new one when the batch size
    # changes after a reset, so a random stream continues; forward that to the nested rules.
    @property
    def generators(self) -> tuple[Any, Any]:
        return (getattr(self.rule.state, "generators", None), getattr(self.reference.state, "generators", None))

    @generators.setter
    def generators(self, value: tuple[Any, Any]) -> None:
        for sub, gens in zip((self.rule, self.reference), value):
            if gens is not None and hasattr(sub.state, "generators"):
                sub.state.generators = gens


@dataclass(frozen=True, eq=False)
class Shadowed(AbstractTransport):
    """Learns with ``rule``: M_t = T_t(M_{t−1}, J_t) + Ī_t and g_t = δ_t·M_t, unchanged; carries
    the ``reference`` (exact RTRL by default), M*_t = J_t M*_{t−1} + Ī_t, on the same
    trajectory and records per backward, per member,

        cos_t = ⟨g_t, g*_t⟩ / (‖g_t‖ ‖g*_t‖),      r_t = ‖g_t‖ / ‖g*_t‖,

    in ``state.history`` (a :class:`GradientLog`). The reference never touches ``.grad``:
    learning is bit-identical to ``rule`` alone. Costs the reference's work and memory on top
    (O(N²P) and O(NP) for full RTRL).

    Options:
        rule: the rule learned with: a rule object (``Sparse(k=4)``, ``UORO(seed=1)``) or
            the name of a rule whose defaults suffice ("immediate", "snap1", "uoro", ...).
        reference: the rule compared against — "full" by default.

    Example::

        learner = OnlineLearner(cell, "shadow", rule=Sparse(k=4))
        ... learner.step(x); learner.backward(loss) ...
        learner.transport_state.history.cosine   # (backwards, E)
    """

    rule: AbstractTransport | str | None = None
    reference: AbstractTransport | str = "full"

    name = "shadow"
    member_reproduces_solo = False  # its inner rule's seed cannot be given per member

    def __post_init__(self):
        from .registry import make_transport  # a leaf: it imports no rule

        if self.rule is None:
            raise ConfigurationError(
                "the shadow needs the rule to learn with, e.g. transport='shadow', rule='immediate' "
                "or rule=Sparse(k=4)"
            )
        for name in ("rule", "reference"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = make_transport(value)
                object.__setattr__(self, name, value)
            if isinstance(value, AbstractWindowRule):
                raise ConfigurationError(
                    f"the shadow's {name} {value.name!r} learns through autograd's graph, not by "
                    "transporting M; shadow a transport rule (full, sparse, snap1, uoro, ...)"
                )
            if not isinstance(value, AbstractTransport):
                raise ConfigurationError(f"the shadow's {name} must be a rule name or object, got {value!r}")

    @property
    def needs_jacobian(self) -> bool:  # type: ignore[override]
        return self.rule.needs_jacobian or self.reference.needs_jacobian

    def check_context(self, ctx: TransportContext) -> None:
        self.rule.check_context(ctx)
        self.reference.check_context(ctx)

    def init(self, ctx: TransportContext) -> ShadowState:
        self.check_context(ctx)
        return ShadowState(ctx, Substate(self.rule.init(ctx)), Substate(self.reference.init(ctx)),
                           GradientLog(ctx.members))

    def reset(self, state: ShadowState) -> None:
        self.rule.reset(state.rule.state)
        self.reference.reset(state.reference.state)

    def update(self, state: ShadowState, derivs) -> None:
        # the learned rule first, so it sees exactly what it would see alone
        self.rule.update(state.rule.state, derivs)
        self.reference.update(state.reference.state, derivs)
        state.steps += 1

    def gradient(self, state: ShadowState, delta):
        grads = self.rule.gradient(state.rule.state, delta)
        exact = self.reference.gradient(state.reference.state, delta)
        E = delta.shape[0]
        g = torch.cat([t.reshape(E, -1) for t in grads], dim=1).double()
        gs = torch.cat([t.reshape(E, -1) for t in exact], dim=1).double()
        norm, norm_s = g.norm(dim=1), gs.norm(dim=1)
        state.history.append(state.steps, (g * gs).sum(dim=1) / (norm * norm_s), norm / norm_s)
        return grads

    def influence(self, state: ShadowState):
        return self.rule.influence(state.rule.state)

    def reference_influence(self, state: ShadowState):
        """The reference's M*_t (dense ``(E, B, N, P)``), or None."""
        return self.reference.influence(state.reference.state)
