"""Recurrent cells: the torch-compatible VanillaRNN, LSTM and GRU with closed-form
derivatives, and FunctionalCell for anything else (autodiff)."""

from __future__ import annotations

from torch import nn

from .base import AbstractCell, StepDerivatives, UnitLocalCell, UnitLocalStructure
from .functional import FunctionalCell
from .gru import GRU
from .lstm import LSTM
from .vanilla import VanillaRNN

__all__ = [
    "AbstractCell",
    "FunctionalCell",
    "GRU",
    "LSTM",
    "StepDerivatives",
    "UnitLocalCell",
    "UnitLocalStructure",
    "VanillaRNN",
    "as_cell",
    "from_torch",
]


def from_torch(cell: nn.Module) -> UnitLocalCell:
    """The closed-form cell equivalent to a ``torch.nn.RNNCell``/``LSTMCell``/``GRUCell``.

    The returned cell shares the torch cell's Parameter objects, so an optimizer built on
    either one trains both.
    """
    if isinstance(cell, nn.RNNCell):
        ours = VanillaRNN(cell.input_size, cell.hidden_size, bias=cell.bias,
                          nonlinearity=cell.nonlinearity)
    elif isinstance(cell, nn.LSTMCell):
        ours = LSTM(cell.input_size, cell.hidden_size, bias=cell.bias)
    elif isinstance(cell, nn.GRUCell):
        ours = GRU(cell.input_size, cell.hidden_size, bias=cell.bias)
    else:
        raise TypeError(
            f"from_torch takes torch.nn.RNNCell, LSTMCell or GRUCell, got {type(cell).__name__}"
        )
    for name, param in cell.named_parameters():
        setattr(ours, name, param)
    return ours


def as_cell(cell) -> AbstractCell:
    """Accept our cells as they are and convert torch's own RNN cells (sharing parameters)."""
    if isinstance(cell, AbstractCell):
        return cell
    if isinstance(cell, (nn.RNNCell, nn.LSTMCell, nn.GRUCell)):
        return from_torch(cell)
    raise TypeError(
        f"{type(cell).__name__} is not a cell this library knows: pass a sparse_rtrl.cells cell, "
        "a torch.nn.RNNCell/LSTMCell/GRUCell, or wrap your own step with "
        "sparse_rtrl.cells.FunctionalCell(step, params, input_size, state_size) or "
        "FunctionalCell.from_module(module, input_size, state_size)"
    )
