"""Ensembles: E independent learners (own parameters, masks, generators and optimizer state)
advanced as one batched tensor program.

Build an ensemble cell by stacking solo cells (each member keeps its own initial
parameters), and a stacked readout; one ``OnlineLearner`` then runs all members at once.
Elementwise optimizers (SGD, Adam, RMSprop, ...) applied to the stacked parameters keep
every member's optimizer state separate, so member e follows exactly the run it would have
alone.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .cells.base import AbstractCell, UnitLocalCell
from .cells.functional import FunctionalCell

Tensor = torch.Tensor


def stack_cells(cells: Sequence[AbstractCell]) -> AbstractCell:
    """One ensemble cell whose member e has a copy of ``cells[e]``'s parameters."""
    cells = list(cells)
    if not cells:
        raise ValueError("stack_cells needs at least one cell")
    first = cells[0]
    if any(c.ensemble_size is not None for c in cells):
        raise ValueError("stack_cells takes solo cells (ensemble_size=None)")
    if isinstance(first, UnitLocalCell):
        options = first.options()
        if any(type(c) is not type(first) or c.options() != options for c in cells):
            raise ValueError("all cells of an ensemble must have the same type and options")
        p = next(first.parameters())
        stacked = type(first)(**options, ensemble_size=len(cells), device=p.device, dtype=p.dtype)
        with torch.no_grad():
            for name, param in stacked.named_parameters():
                param.copy_(torch.stack([getattr(c, name) for c in cells]))
        return stacked
    if isinstance(first, FunctionalCell):
        params = {
            name: torch.stack([c.transported_parameters()[i].detach() for c in cells]).clone()
            for i, name in enumerate(first._names)
        }
        return FunctionalCell(first._step_fn, params, first.input_size, first.state_size,
                              first.hidden_size, ensemble_size=len(cells))
    raise TypeError(f"cannot stack cells of type {type(first).__name__}")


def member_cell(cell: AbstractCell, e: int) -> AbstractCell:
    """A solo copy of member e of an ensemble cell."""
    if cell.ensemble_size is None:
        raise ValueError("member_cell takes an ensemble cell")
    if isinstance(cell, UnitLocalCell):
        p = next(cell.parameters())
        solo = type(cell)(**cell.options(), device=p.device, dtype=p.dtype)
        with torch.no_grad():
            for name, param in solo.named_parameters():
                param.copy_(getattr(cell, name)[e])
        return solo
    params = {name: p[e].detach().clone() for name, p in zip(cell._names, cell.transported_parameters())}
    return FunctionalCell(cell._step_fn, params, cell.input_size, cell.state_size, cell.hidden_size)


def new_ensemble(kind: type[UnitLocalCell], members: int, *args, seed: int | Sequence[int] = 0,
                 device=None, dtype=None, **kwargs) -> UnitLocalCell:
    """An ensemble cell whose member e is initialised as a solo cell from seed + e (or seed[e]).

    ``new_ensemble(VanillaRNN, 8, 1, 64, seed=0)`` holds the same members as
    ``stack_cells([VanillaRNN(1, 64) initialised from seed e for e in 0..7])``.
    """
    seeds = [seed + e for e in range(members)] if isinstance(seed, int) else list(seed)
    if len(seeds) != members:
        raise ValueError(f"got {len(seeds)} seeds for {members} members")
    cells = []
    for s in seeds:
        c = kind(*args, **kwargs)
        c.reset_parameters(generator=torch.Generator().manual_seed(int(s)))
        cells.append(c)
    return stack_cells(cells).to(device=device, dtype=dtype)


class StackedLinear(nn.Module):
    """E independent linear readouts: y[e] = h[e]·W[e]ᵀ + b[e] for h ``(E, ..., in)``."""

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.empty(members, out_features, **kw)) if bias else None
        bound = 1.0 / math.sqrt(in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear]) -> "StackedLinear":
        first = linears[0]
        out = cls(len(linears), first.in_features, first.out_features, first.bias is not None,
                  device=first.weight.device, dtype=first.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(torch.stack([l.weight for l in linears]))
            if out.bias is not None:
                out.bias.copy_(torch.stack([l.bias for l in linears]))
        return out

    def forward(self, h: Tensor) -> Tensor:
        E = self.members
        flat = h.reshape(E, -1, self.in_features)
        y = torch.bmm(flat, self.weight.transpose(1, 2))
        if self.bias is not None:
            y = y + self.bias.unsqueeze(1)
        return y.reshape(*h.shape[:-1], self.out_features)
