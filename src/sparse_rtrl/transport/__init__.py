"""Gradient transport rules: what carries M = ∂s/∂θ forward in time (SPEC §2.2)."""

from __future__ import annotations

from .base import AbstractRule, AbstractTransport, AbstractWindowRule, TransportContext, load_state, state_to_dict
from .registry import RULES, make_transport, register, unsupported_reason
from .full import Full
from .kf import KF
from .shadow import GradientLog, Shadowed
from .snap1 import SnAp1, detect_pattern
from .sparse import Sparse
from .tbptt import TBPTT
from .trace import Immediate, Trace
from .uoro import UORO
from . import ops  # noqa: F401  (registers the sparse_rtrl:: torch operators)

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

for _cls in (Full, Sparse, Immediate, Trace, TBPTT):
    register(_cls)
for _cls in (SnAp1, UORO, KF, Shadowed):
    register(_cls)
