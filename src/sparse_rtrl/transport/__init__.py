"""Gradient transport rules: what carries M = ∂s/∂θ forward in time (SPEC §2.2)."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigurationError
from .base import AbstractTransport, TransportContext, load_state, state_to_dict
from .full import Full
from .sparse import Sparse
from .tbptt import TBPTT
from .trace import Immediate, Trace

__all__ = [
    "AbstractTransport",
    "Full",
    "Immediate",
    "Sparse",
    "TBPTT",
    "Trace",
    "TransportContext",
    "load_state",
    "make_transport",
    "register",
    "state_to_dict",
    "RULES",
]

#: name → rule class; ``make_transport`` and the CLI read names from here only
RULES: dict[str, type[AbstractTransport]] = {}


def register(cls: type[AbstractTransport]) -> type[AbstractTransport]:
    """Make a rule class constructible by its ``name``."""
    RULES[cls.name] = cls
    return cls


for _cls in (Full, Sparse, Immediate, Trace, TBPTT):
    register(_cls)


def make_transport(transport: str | AbstractTransport = "full", **options) -> AbstractTransport:
    """A rule from its name and options, e.g. ``make_transport("sparse", k=4)``.

    A rule object is returned as it is (options are then not allowed).
    """
    if isinstance(transport, AbstractTransport):
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
