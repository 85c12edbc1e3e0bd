"""The one recipe that turns option names into a seeded learner, readout and optimizer (used
by the river estimators and ``sparse-rtrl stream``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from ..cells import CELLS
from ..errors import ConfigurationError
from ..learner import OnlineLearner
from ..transport import RULES

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop,
              "adamw": torch.optim.AdamW}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_K = 4  # paths per unit for the sparse rule when k is not given


def _choose(what: str, value: Any, table: dict) -> None:
    if value not in table:
        raise ConfigurationError(f"unknown {what} {value!r}: choose one of {', '.join(sorted(table))}")


def rule_options(rule: str, k: int | None, options: dict | None, seed: int, hidden: int | None = None) -> dict[str, Any]:
    """The rule's keyword options: ``options``, plus k for "sparse" (default 4, at most the
    ``hidden`` units; an error with any other rule) and ``seed`` for the rules that draw
    random numbers."""
    _choose("rule", rule, RULES)
    kwargs = dict(options or {})
    if k is not None:
        if rule != "sparse":
            raise ConfigurationError(f"k applies to rule='sparse' only, but rule={rule!r}: drop k or use rule='sparse'")
        kwargs["k"] = k
    elif rule == "sparse" and "k" not in kwargs:
        kwargs["k"] = DEFAULT_K if hidden is None else min(DEFAULT_K, hidden)
    if "seed" in {f.name for f in dataclasses.fields(RULES[rule])} and "seed" not in kwargs:
        kwargs["seed"] = seed
    return kwargs


def check_options(cell: str, hidden: int, rule: str, k: int | None, options: dict | None, optimizer: str,
                  lr: float, dtype: str) -> None:
    """Raise :class:`ConfigurationError` for a bad name, size or rule option (k out of range, ...)."""
    _choose("cell", cell, CELLS)
    _choose("optimizer", optimizer, OPTIMIZERS)
    _choose("dtype", dtype, DTYPES)
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
        raise ConfigurationError(f"hidden must be a positive int, got {hidden!r}")
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0):
        raise ConfigurationError(f"lr must be a positive number, got {lr!r}")
    if options is not None and not isinstance(options, dict):
        raise ConfigurationError(f"rule options must be a dict such as {{'window': 8}}, got {options!r}")
    # a throwaway learner: a wrong option or k out of range fails now, not at the first sample
    OnlineLearner(CELLS[cell](1, hidden), rule, **rule_options(rule, k, options, 0, hidden))


def new_readout(hidden: int, outputs: int, dtype: torch.dtype, generator: torch.Generator | None) -> nn.Linear:
    """``nn.Linear(hidden, outputs)``: weight then bias U(±1/√n) from ``generator``, or zeros."""
    readout = nn.Linear(hidden, outputs, dtype=dtype)
    with torch.no_grad():
        if generator is None:
            readout.weight.zero_()
            readout.bias.zero_()
        else:
            bound = 1.0 / math.sqrt(hidden)
            readout.weight.uniform_(-bound, bound, generator=generator)
            readout.bias.uniform_(-bound, bound, generator=generator)
    return readout


def build_model(input_size: int, outputs: int, *, cell: str = "vanilla", hidden: int = 32, rule: str = "sparse",
                k: int | None = None, options: dict | None = None, optimizer: str = "adam", lr: float = 1e-2,
                seed: int = 0, dtype: str = "float64") -> tuple[OnlineLearner, nn.Linear, torch.optim.Optimizer]:
    """(learner, readout, optimizer), seeded: g = torch.Generator().manual_seed(seed); the cell
    gets torch's U(±1/√n) initialisation from g, then the readout (weight, bias) from g; the
    rule gets ``seed``; the optimizer has two parameter groups, [cell] and [readout]."""
    check_options(cell, hidden, rule, k, options, optimizer, lr, dtype)
    g = torch.Generator().manual_seed(seed)
    c = CELLS[cell](input_size, hidden, dtype=DTYPES[dtype])
    c.reset_parameters(generator=g)
    learner = OnlineLearner(c, rule, **rule_options(rule, k, options, seed, hidden))
    readout = new_readout(hidden, outputs, DTYPES[dtype], g)
    opt = OPTIMIZERS[optimizer]([{"params": list(learner.parameters())}, {"params": list(readout.parameters())}],
                                lr=lr)
    return learner, readout, opt
