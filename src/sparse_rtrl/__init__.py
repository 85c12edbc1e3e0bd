"""sparse_rtrl: online learning in recurrent networks by forward gradient transport.

Exact real-time recurrent learning (RTRL), sparse RTRL (k of N paths per unit), the
immediate rule and eligibility traces — with the torch RNN/LSTM/GRU cells and any
autodiff cell — behind one PyTorch-native learner::

    learner = sparse_rtrl.OnlineLearner(cell, "sparse", k=4)
    h = learner.step(x); learner.backward(loss); optimizer.step()
"""

from . import cells, evaluate, fused, settings, transport
from .cells import GRU, LSTM, FunctionalCell, VanillaRNN
from .ensemble import StackedLinear, member_cell, new_ensemble, stack_cells
from .errors import ConfigurationError, DivergenceError, InputError, SparseRTRLError
from .fused import FusedStep
from .learner import OnlineLearner
from .transport import make_transport

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "DivergenceError",
    "FunctionalCell",
    "FusedStep",
    "GRU",
    "InputError",
    "LSTM",
    "OnlineLearner",
    "SparseRTRLError",
    "StackedLinear",
    "VanillaRNN",
    "cells",
    "evaluate",
    "fused",
    "make_transport",
    "member_cell",
    "new_ensemble",
    "settings",
    "stack_cells",
    "transport",
]
