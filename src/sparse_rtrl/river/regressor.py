"""RTRLRegressor: a recurrent network learned online by gradient transport, as a river regressor."""

from __future__ import annotations

import torch
from river import base
from torch import nn

from ..evaluate import test_then_train
from .estimator import DTYPES, RecurrentEstimator


class RTRLRegressor(RecurrentEstimator, base.Regressor):
    """A recurrent network whose state carries the stream's past, learned online.

    Each ``learn_one(x, y)`` is one prequential step of :mod:`sparse_rtrl.evaluate`:
    h_t = f(h_{t−1}, x_t) (the recurrence advances on x), ŷ_t = W h_t + b, and the squared
    error (ŷ_t − y)² is learned from by the chosen transport rule and optimizer.
    ``predict_one(x)`` evaluates the readout on the state a step on x *would* give, without
    committing it: so the state is advanced by ``learn_one`` alone, and river's
    ``progressive_val_score`` (predict_one then learn_one on every sample) scores exactly the
    predictions of the prequential loop. Order matters: the model is a function of the
    sequence of samples it learned from, not of x alone.

    Features: the feature names of the first ``learn_one`` fix the input, in sorted order
    (so dict order never matters). A feature missing later (or None) counts as 0 — put a
    ``preprocessing.StandardScaler()`` first, and 0 is its running mean; a feature not seen at
    the first ``learn_one`` is ignored. Values must be numbers. Scale the target too
    (``preprocessing.TargetStandardScaler``) when it is far from unit scale.

    Before the first ``learn_one``, ``predict_one`` returns 0.0.

    Parameters
    ----------
    cell
        "vanilla" (tanh RNN), "lstm" or "gru".
    hidden
        Hidden units n.
    rule
        The gradient transport: "sparse" (k paths per unit), "full" (exact RTRL),
        "immediate", "trace", "snap1", "uoro", "kf" (vanilla cell) or "tbptt" (windowed BPTT).
    k
        Paths kept per unit for rule="sparse" (default 4); an error with another rule.
    rule_options
        Further options of the rule, e.g. ``{"window": 16}`` for "tbptt",
        ``{"decay": 0.9}`` for "trace", ``{"selection": "magnitude"}`` for "sparse".
    optimizer
        "adam", "adamw", "sgd" or "rmsprop" (``torch.optim``), over the cell and the readout.
    lr
        Learning rate.
    seed
        Seeds the initial weights and the rule's random numbers (masks, UORO's signs).
        None (river's convention): a seed drawn at construction, so runs differ; pass an
        int for a reproducible run.
    dtype
        "float64" or "float32".

    Examples
    --------

    >>> from river import datasets, evaluate, metrics, preprocessing
    >>> from sparse_rtrl.river import RTRLRegressor
    >>> model = preprocessing.StandardScaler() | preprocessing.TargetStandardScaler(
    ...     RTRLRegressor(hidden=8, k=2, seed=1))
    >>> evaluate.progressive_val_score(datasets.TrumpApproval().take(300), model, metrics.MAE())
    MAE: ...

    """

    def __init__(self, cell: str = "vanilla", hidden: int = 32, rule: str = "sparse", k: int | None = None,
                 rule_options: dict | None = None, optimizer: str = "adam", lr: float = 1e-2, seed: int | None = None,
                 dtype: str = "float64"):
        self._init_options(cell, hidden, rule, k, rule_options, optimizer, lr, seed, dtype)

    def learn_one(self, x: dict, y: float) -> None:
        self._check_numeric(x)  # before the model is built from x's features
        if self._learner is None:
            self._build(x, 1)
        target = torch.tensor([float(y)], dtype=DTYPES[self.dtype])
        test_then_train(self._learner, self._readout, self._vector(x), target, self._opt,
                        loss=nn.functional.mse_loss)

    @torch.no_grad()
    def predict_one(self, x: dict) -> float:
        if self._learner is None:
            return 0.0
        return float(self._readout(self._tentative_hidden(x)))

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": 8}
        yield {"cell": "lstm", "hidden": 4, "rule": "full"}
        yield {"cell": "gru", "hidden": 4, "rule": "tbptt", "rule_options": {"window": 3}}
