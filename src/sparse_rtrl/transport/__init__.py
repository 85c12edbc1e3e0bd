"""Gradient transport rules: what carries M = ∂s/∂θ forward in time (SPEC §2.2)."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigurationError
from .base import AbstractRule, AbstractTransport, AbstractWindowRule, TransportContext, load_state, state_to_dict
from .full import Full
from .kf import KF
from .shadow import GradientLog, Shadowed
from .snap1 import SnAp1, detect_pattern
from .sparse import Sparse
from .tbptt import TBPTT
from .trace import Immediate, Trace
from .uoro import UORO

__all__ = [
    "AbstractRule",
    "AbstractTransport",
    "AbstractWindowRule",
    "Full",
    "GradientLog",
    "Immediate",
    "KF",
    "Shadowed",
    "SnAp1",
    "Sparse",
    "TBPTT",
    "Trace",
    "TransportContext",
    "UORO",
    "detect_pattern",
    "load_state",
    "make_transport",
    "unsupported_reason",
    "register",
    "state_to_dict",
    "RULES",
]

#: name → rule class; ``make_transport`` and the CLI read names from here only
RULES: dict[str, type[AbstractRule]] = {}


def register(cls: type[AbstractRule]) -> type[AbstractRule]:
    """Make a rule class constructible by its ``name``."""
    RULES[cls.name] = cls
    return cls


for _cls in (Full, Sparse, Immediate, Trace, TBPTT):
    register(_cls)
for _cls in (SnAp1, UORO, KF, Shadowed):
    register(_cls)


def make_transport(transport: str | AbstractRule = "full", **options) -> AbstractRule:
    """A rule from its name and options, e.g. ``make_transport("sparse", k=4)``.

    A rule object is returned as it is (options are then not allowed).
    """
    if isinstance(transport, AbstractRule):
        if options:
            raise ConfigurationError(
                f"options {sorted(options)} were given with a ready-made {type(transport).__name__}; "
                "set them on the rule object instead"
            )
        return transport
    if not isinstance(transport, str) or transport not in RULES:
        raise ConfigurationError(
            f"unknown transport {transport!r}: choose one of {', '.join(sorted(RULES))} "
            "or pass a rule object"
        )
    cls = RULES[transport]
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = set(options) - allowed
    if unknown:
        raise ConfigurationError(
            f"transport {transport!r} has no option(s) {', '.join(sorted(unknown))}; its options "
            f"are: {', '.join(sorted(allowed)) or 'none'}"
        )
    return cls(**options)


def unsupported_reason(transport: str | AbstractRule, cell, **options) -> str | None:
    """Why ``transport`` cannot serve ``cell`` (the rule's ConfigurationError message), or
    None if it can. E.g. ``unsupported_reason("kf", LSTM(1, 8))`` names the vanilla cell."""
    from ..cells import as_cell

    rule, cell = make_transport(transport, **options), as_cell(cell)
    p = next(cell.parameters())
    ctx = TransportContext(
        layout=cell.layout(), input_size=cell.input_size, members=cell.members, batch=1,
        state_size=cell.state_size, hidden_size=cell.hidden_size, structure=cell.structure,
        dtype=p.dtype, device=p.device,
    )
    try:
        rule.check_context(ctx)
    except ConfigurationError as err:
        return str(err)
    return None
