"""The one model builder of the experiments, the seeds every run derives from, and the
pretrained snapshot.

``build_model`` dispatches on ``Experiment.cell``: a name of the cell registry
(:data:`sparse_rtrl.cells.CELLS`, extended by :func:`~sparse_rtrl.cells.register_cell`)
gives that cell and a linear readout; ``"transformer"`` gives the
:class:`~sparse_rtrl.transformer.CausalTransformer`. Both start as float64 masters
initialised from the run's seed.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from ..cells import CELLS
from ..errors import ConfigurationError
from ..transformer import CausalTransformer, TransformerConfig
from .config import Experiment

#: the model name of the transformer (every other name is a registered cell)
TRANSFORMER = "transformer"
#: model_options keys that build the transformer (d_model is the experiment's hidden_size)
MODEL_KEYS = tuple(f.name for f in fields(TransformerConfig) if f.name not in ("input_size", "output_size", "d_model"))

#: every random stream of a run derives from (seed, purpose), so any number can be regenerated
PURPOSES = {"init": 0, "pretrain_data": 1, "pretrain_batches": 2, "adapt": 3, "masks": 4}


def derived_seed(seed: int, purpose: str) -> int:
    return 1000 * int(seed) + PURPOSES[purpose]


def build_model(exp: Experiment, task, seed: int) -> tuple[nn.Module, nn.Linear] | CausalTransformer:
    """The model of ``exp`` for ``task``, initialised from ``seed`` (float64 master): the
    registered cell and its linear readout as a pair, or the transformer."""
    if exp.cell == TRANSFORMER:
        return _transformer(exp, task, seed)
    if exp.cell not in CELLS:
        raise ConfigurationError(f"experiment {exp.name!r}: unknown cell {exp.cell!r}; use one of "
                                 f"{', '.join(map(repr, [*CELLS, TRANSFORMER]))} (or register_cell your own)")
    return _recurrent(exp, task, seed)


def _recurrent(exp: Experiment, task, seed: int) -> tuple[nn.Module, nn.Linear]:
    g = torch.Generator().manual_seed(derived_seed(seed, "init"))
    kind = CELLS[exp.cell]
    kwargs = {"leak": exp.leak} if "leak" in inspect.signature(kind).parameters else {}
    cell = kind(task.input_size, exp.hidden_size, **kwargs).double()
    cell.reset_parameters(generator=g)
    readout = nn.Linear(exp.hidden_size, task.output_size).double()
    bound = 1.0 / math.sqrt(exp.hidden_size)
    with torch.no_grad():
        readout.weight.uniform_(-bound, bound, generator=g)
        readout.bias.zero_()
    return cell, readout


def _transformer(exp: Experiment, task, seed: int) -> CausalTransformer:
    unknown = set(exp.model_options) - set(MODEL_KEYS)
    if unknown:
        raise ConfigurationError(
            f"experiment {exp.name!r}: unknown transformer model_options {sorted(unknown)}; use "
            f"{', '.join(MODEL_KEYS)} (d_model is hidden_size)"
        )
    return CausalTransformer(task.input_size, task.output_size, d_model=exp.hidden_size,
                             seed=derived_seed(seed, "init"), **exp.model_options).double()


@dataclass
class Snapshot:
    """The pretrained model of one seed (RNN or transformer), and how its pretraining went."""

    cell_state: dict
    readout_state: dict
    losses: list[float]  # mean loss per logged block of updates
    final_loss: float
    plateau_ratio: float  # loss of the last 10 % of updates / loss of the 10 % before
    model_config: dict | None = None  # models whose shape is not in the Experiment

    @classmethod
    def from_history(cls, cell_state: dict, readout_state: dict, history, model_config: dict | None = None) -> "Snapshot":
        """Summarise the per-update pretraining losses: 50 block means, the mean of the last
        10 % and its ratio to the 10 % before (≈ 1 once pretraining has plateaued)."""
        h = np.asarray(history, dtype=float)
        tenth = max(1, len(h) // 10)
        block = max(1, len(h) // 50)
        return cls(
            cell_state=cell_state, readout_state=readout_state, model_config=model_config,
            losses=[float(h[i : i + block].mean()) for i in range(0, len(h), block)],
            final_loss=float(h[-tenth:].mean()),
            plateau_ratio=float(h[-tenth:].mean() / h[-2 * tenth : -tenth].mean()) if len(h) >= 2 * tenth else math.nan,
        )

    def to_dict(self) -> dict:
        out = {"cell_state": self.cell_state, "readout_state": self.readout_state,
               "losses": self.losses, "final_loss": self.final_loss, "plateau_ratio": self.plateau_ratio}
        return out if self.model_config is None else {**out, "model_config": self.model_config}
