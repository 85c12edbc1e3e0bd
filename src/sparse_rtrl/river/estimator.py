"""What the river regressor and classifier share: options, dict features → a tensor, the
lazily built learner/readout/optimizer, and the tentative step that predictions use."""

from __future__ import annotations

import dataclasses
import math
import numbers
import secrets
from typing import Any

import torch
from torch import nn

from ..cells import GRU, LSTM, VanillaRNN
from ..errors import ConfigurationError, InputError
from ..learner import OnlineLearner
from ..transport import RULES

CELLS = {"vanilla": VanillaRNN, "lstm": LSTM, "gru": GRU}
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop,
              "adamw": torch.optim.AdamW}
DTYPES = {"float32": torch.float32, "float64": torch.float64}

Tensor = torch.Tensor


def uniform_(t: Tensor, bound: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        t.uniform_(-bound, bound, generator=generator)


class RecurrentEstimator:
    """Mixin holding the options and the model of an RTRL river estimator.

    The model is built at the first ``learn_one``: the cell (torch's U(±1/√n) initialisation
    from ``torch.Generator().manual_seed(seed)``), then the readout ``nn.Linear(n, out)``,
    weight then bias U(±1/√n) from the same generator, the rule (seeded with ``seed`` when it
    draws random numbers) and the optimizer over [cell params] and [readout params] (two
    parameter groups, in that order).
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

    # -- options ----------------------------------------------------------------------------
    def _rule_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.rule_options or {})
        if self.k is not None:
            if self.rule != "sparse":
                raise ConfigurationError(
                    f"k applies to rule='sparse' only, but rule={self.rule!r}: drop k or use "
                    "rule='sparse'")
            kwargs["k"] = self.k
        elif self.rule == "sparse" and "k" not in kwargs:
            kwargs["k"] = 4  # the documented default for the sparse rule
        fields = {f.name for f in dataclasses.fields(RULES[self.rule])}
        if "seed" in fields and "seed" not in kwargs:
            kwargs["seed"] = self._seed
        return kwargs

    def _check_options(self) -> None:
        def choose(what, value, table):
            if value not in table:
                raise ConfigurationError(f"unknown {what} {value!r}: choose one of {', '.join(sorted(table))}")

        choose("cell", self.cell, CELLS)
        choose("rule", self.rule, RULES)
        choose("optimizer", self.optimizer, OPTIMIZERS)
        choose("dtype", self.dtype, DTYPES)
        if not isinstance(self.hidden, int) or self.hidden < 1:
            raise ConfigurationError(f"hidden must be a positive int, got {self.hidden!r}")
        if not (isinstance(self.lr, numbers.Real) and self.lr > 0):
            raise ConfigurationError(f"lr must be a positive number, got {self.lr!r}")
        if self.rule_options is not None and not isinstance(self.rule_options, dict):
            raise ConfigurationError(f"rule_options must be a dict such as {{'window': 8}}, got {self.rule_options!r}")
        # a throwaway learner: a wrong option or k out of range fails here, not at the 1st sample
        OnlineLearner(CELLS[self.cell](1, self.hidden), self.rule, **self._rule_kwargs())

    # -- features ---------------------------------------------------------------------------
    def _vector(self, x: dict) -> Tensor:
        """x as a tensor in the fixed feature order; missing features (or None) are 0, features
        not seen at the first learn_one are ignored."""
        values = []
        for name in self._features:
            v = x.get(name)
            if v is None:
                values.append(0.0)
            elif isinstance(v, numbers.Real):  # bool, int, float, numpy scalars
                values.append(float(v))
            else:
                raise InputError(
                    f"feature {name!r} has a non-numeric value {v!r}: encode it first, e.g. "
                    "compose.SelectType(str) | preprocessing.OneHotEncoder() in the pipeline")
        return torch.tensor(values, dtype=DTYPES[self.dtype])

    # -- the model --------------------------------------------------------------------------
    def _build(self, x: dict, outputs: int) -> None:
        self._features = sorted(x, key=repr)  # sorted: the same model whatever the dict order
        if not self._features:
            raise InputError("the first sample has no features: an RTRL model needs at least one")
        g = torch.Generator().manual_seed(self._seed)
        dtype = DTYPES[self.dtype]
        cell = CELLS[self.cell](len(self._features), self.hidden, dtype=dtype)
        cell.reset_parameters(generator=g)
        self._learner = OnlineLearner(cell, self.rule, **self._rule_kwargs())
        self._readout = self._new_readout(outputs, g)
        self._opt = OPTIMIZERS[self.optimizer](
            [{"params": list(self._learner.parameters())}, {"params": list(self._readout.parameters())}],
            lr=self.lr)

    def _new_readout(self, outputs: int, g: torch.Generator | None) -> nn.Linear:
        readout = nn.Linear(self.hidden, outputs, dtype=DTYPES[self.dtype])
        bound = 1.0 / math.sqrt(self.hidden)
        if g is None:  # a grown readout starts its new rows at zero
            nn.init.zeros_(readout.weight)
            nn.init.zeros_(readout.bias)
        else:
            uniform_(readout.weight, bound, g)
            uniform_(readout.bias, bound, g)
        return readout

    @torch.no_grad()
    def _tentative_hidden(self, x: dict) -> Tensor:
        """h of the state after stepping on x, without committing the step (s is unchanged)."""
        learner = self._learner
        cell = learner.cell
        xi = self._vector(x).reshape(1, 1, -1)
        state = learner.state
        s = cell.initial_state(1) if state is None else state.reshape(1, 1, -1)
        params = cell.stacked_parameters()
        if learner.transport.uses_graph and learner.transport_state is not None:
            # windowed BPTT recomputes s_t through its window with the current θ: predict so too
            s_next = learner.transport.forward(learner.transport_state, cell, params, s, xi)
        else:
            s_next = cell.step(params, s, xi)
        return cell.hidden(s_next).reshape(-1)
