"""The claim families, in one table: each module measures its claims from the result files
(``claims(views, request)`` → rows), draws its figures (``figures(views, folder)`` →
(title, path) pairs) and defines its experiments; the report iterates this table, and the
runner asks it which adaptation protocol runs an experiment's model.

    claims          C1–C7, C10–C12 on recurrent cells (sine, Lorenz, adding)
    transformer_c8  C8, the online transformer with head-sparse transport
    bci             C9, decoder adaptation to electrode drift
    credit          T0–T7, the transport-dependent regime (SPEC §4b)

A new family is one module with those two functions plus a line here.
"""

from __future__ import annotations

import re

from . import bci, claims, credit, protocol, transformer_c8
from .config import Experiment
from .models import TRANSFORMER
from .views import ClaimResult, ExperimentView, Request

FAMILIES = (claims, transformer_c8, bci, credit)


def _order(row: ClaimResult) -> tuple[str, int]:
    """Claim ids in reading order: C1 … C12, then T0 …; the rows of one claim (C9, C9-chewie,
    …) keep their order."""
    m = re.match(r"([A-Z]+)(\d+)", row.id)
    return (m.group(1), int(m.group(2))) if m else (row.id, 0)


def evaluate_claims(views: dict[str, ExperimentView], request: Request | None = None) -> list[ClaimResult]:
    """Every family's rows in claim order; ``request`` (what the sweep was asked for; None:
    unknown) tells "not requested" from "data absent"."""
    rows = [row for family in FAMILIES for row in family.claims(views, request)]
    return sorted(rows, key=_order)


def adapt_for(exp: Experiment):
    """The adaptation run of the experiment's model: the transformer's own, else the recurrent
    cells' (pretraining is one function for both: ``pretraining.pretrain``)."""
    if exp.cell == TRANSFORMER:
        return transformer_c8.adapt
    return protocol.adapt
