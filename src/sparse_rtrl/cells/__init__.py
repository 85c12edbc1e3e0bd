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
    "CELLS",
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
    "register_cell",
]

#: name → closed-form cell class; configs ("cell": "lstm"), conversion of torch's cells and
#: the test suites read the cells from here only
CELLS: dict[str, type[UnitLocalCell]] = {}


def register_cell(cls: type[UnitLocalCell]) -> type[UnitLocalCell]:
    """Make a closed-form cell known by its ``name`` (and convertible from its ``torch_type``)."""
    CELLS[cls.name] = cls
    return cls


for _cls in (VanillaRNN, LSTM, GRU):
    register_cell(_cls)


def from_torch(cell: nn.Module) -> UnitLocalCell:
    """The closed-form cell equivalent to a ``torch.nn.RNNCell``/``LSTMCell``/``GRUCell``.

    The returned cell shares the torch cell's Parameter objects, so an optimizer built on
    either one trains both.
    """
    kinds = [cls for cls in CELLS.values() if cls.torch_type is not None and isinstance(cell, cls.torch_type)]
    if not kinds:
        names = [cls.torch_type.__name__ for cls in CELLS.values() if cls.torch_type is not None]
        raise TypeError(f"from_torch takes torch.nn.{', '.join(names[:-1])} or {names[-1]}, got {type(cell).__name__}")
    ours = kinds[0](**kinds[0].options_of_torch(cell))
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
