"""The common shape of a transport rule: M_t = T_t(M_{t−1}, J_t) + Ī_t, g_t = (∂L_t/∂h_t)·M_t.

A rule is a small frozen dataclass of options with four methods: ``init`` (fresh state for a
context), ``reset`` (a new sequence: zero influence, keep the randomness), ``update``
(advance the state by one step, in place) and ``gradient`` (contract with δ = ∂L/∂h).
Rule states are dataclasses of tensors, generators and counters; :func:`state_to_dict` and
:func:`load_state` round-trip them so a stream continues bit-exactly.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from ..cells.base import StepDerivatives, UnitLocalStructure
from ..errors import ConfigurationError
from ..layout import ParamLayout

Tensor = torch.Tensor


@dataclass(frozen=True)
class TransportContext:
    """What a rule needs to know to allocate its state."""

    layout: ParamLayout
    input_size: int  # I
    members: int  # E
    batch: int  # B
    state_size: int  # N
    hidden_size: int  # H: δ = ∂L/∂h covers the first H state components
    structure: UnitLocalStructure | None
    dtype: torch.dtype
    device: torch.device


class Generators:
    """One seeded ``torch.Generator`` per ensemble member (member e: seeds[e])."""

    def __init__(self, seeds: Sequence[int], device: torch.device):
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self.items = []
        for s in self.seeds:
            g = torch.Generator(device=self.device)
            g.manual_seed(s)
            self.items.append(g)

    def __getitem__(self, e: int) -> torch.Generator:
        return self.items[e]

    def __len__(self) -> int:
        return len(self.items)

    def state_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "states": [g.get_state() for g in self.items]}

    def __getstate__(self) -> dict[str, Any]:
        # the generators' states as plain bytes: a pickled torch.Generator names a temporary
        # storage by its address, so two pickles of the same state would differ byte-wise
        return {"seeds": self.seeds, "device": str(self.device),
                "states": [bytes(g.get_state().numpy()) for g in self.items]}

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(d["seeds"], torch.device(d["device"]))
        for g, s in zip(self.items, d["states"]):
            g.set_state(torch.frombuffer(bytearray(s), dtype=torch.uint8))

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if len(d["states"]) != len(self.items):
            raise ConfigurationError(
                f"the saved state has {len(d['states'])} generators but this learner has "
                f"{len(self.items)} ensemble members; load it into a learner of the same size"
            )
        self.seeds = list(d["seeds"])
        for g, s in zip(self.items, d["states"]):
            g.set_state(s)


def member_seeds(seed: int | Sequence[int], members: int) -> list[int]:
    """``seed`` for a solo learner; member e of an ensemble uses seed + e (or seeds[e])."""
    if isinstance(seed, int):
        return [seed + e for e in range(members)]
    seeds = list(seed)
    if len(seeds) != members:
        raise ConfigurationError(
            f"got {len(seeds)} seeds for an ensemble of {members} members: pass one seed per "
            "member, or a single int (member e then uses seed + e)"
        )
    return seeds


@dataclass
class RuleState:
    """Base of every rule state; ``ctx`` is the context it was built for (not saved)."""

    ctx: TransportContext


def _saved_fields(state: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(state) if f.name != "ctx"]


def state_to_dict(state: Any) -> dict[str, Any]:
    """A rule state as plain data (tensors cloned, generators and influences as dicts)."""
    if hasattr(state, "flush"):  # work deferred to the next read of the state is done first
        state.flush()
    out = {}
    for name in _saved_fields(state):
        value = getattr(state, name)
        if isinstance(value, Tensor):
            out[name] = value.detach().clone()
        elif hasattr(value, "state_dict"):
            out[name] = value.state_dict()
        elif hasattr(value, "tensors"):
            out[name] = [t.clone() for t in value.tensors()]
        else:
            out[name] = value
    return out


def load_state(state: Any, saved: dict[str, Any]) -> None:
    """Copy ``saved`` (from :func:`state_to_dict`) into a freshly initialised ``state``."""
    names = set(_saved_fields(state))
    if set(saved) != names:
        raise ConfigurationError(
            f"the saved transport state has fields {sorted(saved)} but this rule's state has "
            f"{sorted(names)}: load it into a learner built with the same transport rule"
        )
    for name in names:
        value, new = getattr(state, name), saved[name]
        if isinstance(value, Tensor):
            if new is None or value.shape != new.shape:
                raise ConfigurationError(
                    f"saved transport tensor {name!r} has shape "
                    f"{None if new is None else tuple(new.shape)}, expected {tuple(value.shape)}: "
                    "the learner must have the same cell size, ensemble and batch size"
                )
            value.copy_(new)
        elif hasattr(value, "load_state_dict"):
            value.load_state_dict(new)
        elif hasattr(value, "tensors"):
            for t, n in zip(value.tensors(), new):
                t.copy_(n)
        elif isinstance(new, Tensor):
            setattr(state, name, new.to(value.device) if isinstance(value, Tensor) else new.clone())
        else:
            setattr(state, name, new)


class AbstractRule(ABC):
    """What every rule of the registry has: a name, a state for a context, a reset.

    Two families share it: :class:`AbstractTransport` (forward transport of M) and
    :class:`AbstractWindowRule` (the window recomputed by autograd: TBPTT)."""

    name: ClassVar[str] = ""
    #: whether member e of an ensemble reproduces the solo run with member e's seed, bit for
    #: bit (what lets a sweep run the seeds of one method as one batched job)
    member_reproduces_solo: ClassVar[bool] = True

    @abstractmethod
    def init(self, ctx: TransportContext) -> Any:
        """A fresh state: zero influence (or an empty window), generators seeded."""

    @abstractmethod
    def reset(self, state: Any) -> None:
        """Start a new sequence: zero the influence, keep generators and counters."""

    def influence(self, state: Any) -> Tensor | None:
        """M_t as a dense ``(E, B, N, P)`` tensor, for diagnostics (None if not kept)."""
        return None

    def check_context(self, ctx: TransportContext) -> None:
        """Raise :class:`ConfigurationError` if this rule cannot serve ``ctx``."""


class AbstractTransport(AbstractRule):
    """A rule carrying M = ∂s/∂θ forward: M_t = T_t(M_{t−1}, J_t) + Ī_t."""

    #: whether ``update`` reads J_t (the immediate rule and traces do not)
    needs_jacobian: ClassVar[bool] = True

    @abstractmethod
    def update(self, state: Any, derivs: StepDerivatives) -> None:
        """Advance ``state`` from M_{t−1} to M_t in place."""

    @abstractmethod
    def gradient(self, state: Any, delta: Tensor) -> list[Tensor]:
        """g_t = Σ_b δ_b·M_t,b per parameter block, ``(E, *shape)``; δ is ``(E, B, H)``."""


class AbstractWindowRule(AbstractRule):
    """A rule that keeps no M: it recomputes s_t by autograd through a window of recent
    steps, so the learner's h_t carries that graph and ``loss.backward()`` gives g_t."""

    @abstractmethod
    def forward(self, state: Any, cell, params: list[Tensor], s_prev: Tensor, x: Tensor) -> Tensor:
        """s_t = f(θ, s_{t−1}, x_t) recomputed through the window with ``params`` (graph kept)."""

    @abstractmethod
    def commit(self, state: Any, s_prev: Tensor, x: Tensor) -> None:
        """Record (x_t, s_{t−1}) in the window after a successful step."""
