"""What the river regressor and classifier share: options, dict features → a tensor, the
lazily built learner/readout/optimizer, and the tentative step that predictions use."""

from __future__ import annotations

import numbers
import secrets

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..learner import OnlineLearner
from ..streams.model import DTYPES, build_model, check_options, new_readout

Tensor = torch.Tensor


class RecurrentEstimator:
    """Mixin holding the options and the model of an RTRL river estimator.

    The model is built at the first ``learn_one`` by :func:`sparse_rtrl.streams.model.build_model`
    (the cell's and then the readout's weights from ``torch.Generator().manual_seed(seed)``, the
    rule seeded with ``seed``, the optimizer over [cell] and [readout] parameter groups).
    """

    def _init_options(self, cell: str, hidden: int, rule: str, k: int | None, rule_options: dict | None,
                      optimizer: str, lr: float, seed: int | None, dtype: str) -> None:
        self.cell = cell
        self.hidden = hidden
        self.rule = rule
        self.k = k
        self.rule_options = rule_options
        self.optimizer = optimizer
        self.lr = lr
        self.seed = seed
        self.dtype = dtype
        # river's convention: seed=None is a fresh, unrepeatable run; the seed actually used
        # is drawn once here, so a pickled or deep-copied model continues the same way
        self._seed = secrets.randbits(62) if seed is None else seed
        self._check_options()
        self._features: list | None = None  # fixed at the first learn_one, in sorted order
        self._learner: OnlineLearner | None = None
        self._readout: nn.Linear | None = None
        self._opt: torch.optim.Optimizer | None = None

    def _check_options(self) -> None:
        check_options(self.cell, self.hidden, self.rule, self.k, self.rule_options, self.optimizer, self.lr,
                      self.dtype)

    # -- features ---------------------------------------------------------------------------
    @staticmethod
    def _check_numeric(x: dict) -> None:
        """Every value of x is a number (or None), before anything is built or learned."""
        for name, v in x.items():
            if v is not None and not isinstance(v, (numbers.Real, np.bool_)):  # bool, int, float, numpy
                raise InputError(
                    f"feature {name!r} has a non-numeric value {v!r}: encode it first, e.g. "
                    "compose.SelectType(str) | preprocessing.OneHotEncoder() in the pipeline")

    def _vector(self, x: dict) -> Tensor:
        """x as a tensor in the fixed feature order; missing features (or None) are 0, features
        not seen at the first learn_one are ignored."""
        self._check_numeric(x)
        values = [0.0 if x.get(name) is None else float(x[name]) for name in self._features]
        return torch.tensor(values, dtype=DTYPES[self.dtype])

    # -- the model --------------------------------------------------------------------------
    def _build(self, x: dict, outputs: int) -> None:
        self._features = sorted(x, key=repr)  # sorted: the same model whatever the dict order
        if not self._features:
            raise InputError("the first sample has no features: an RTRL model needs at least one")
        self._learner, self._readout, self._opt = build_model(
            len(self._features), outputs, cell=self.cell, hidden=self.hidden, rule=self.rule, k=self.k,
            options=self.rule_options, optimizer=self.optimizer, lr=self.lr, seed=self._seed, dtype=self.dtype)

    def _new_readout(self, outputs: int) -> nn.Linear:
        """A readout for a grown label set: its rows start at zero."""
        return new_readout(self.hidden, outputs, DTYPES[self.dtype], None)

    @torch.no_grad()
    def _tentative_hidden(self, x: dict) -> Tensor:
        """h of the state after stepping on x, without committing the step (s is unchanged)."""
        learner = self._learner
        cell = learner.cell
        xi = self._vector(x).reshape(1, 1, -1)
        state = learner.state
        s = cell.initial_state(1) if state is None else state.reshape(1, 1, -1)
        params = cell.stacked_parameters()
        if learner.output_carries_graph and learner.transport_state is not None:
            # windowed BPTT recomputes s_t through its window with the current θ: predict so too
            s_next = learner.transport.forward(learner.transport_state, cell, params, s, xi)
        else:
            s_next = cell.step(params, s, xi)
        return cell.hidden(s_next).reshape(-1)
