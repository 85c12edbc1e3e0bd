"""The registry of transport rules: names to rule classes, and rules from names.

A leaf of the transport package (it imports no rule), so a rule that builds others from
names (the shadow) can use it without an import cycle; ``sparse_rtrl.transport`` registers
the built-in rules here."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigurationError
from .base import AbstractRule, TransportContext

#: name → rule class; ``make_transport`` and the CLI read names from here only
RULES: dict[str, type[AbstractRule]] = {}


def register(cls: type[AbstractRule]) -> type[AbstractRule]:
    """Make a rule class constructible by its ``name``."""
    RULES[cls.name] = cls
    return cls



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
