"""RTRLClassifier: a recurrent network learned online by gradient transport, as a river classifier."""

from __future__ import annotations

import torch
from river import base
from torch import nn

from ..evaluate import test_then_train
from .estimator import RecurrentEstimator


class RTRLClassifier(RecurrentEstimator, base.Classifier):
    """A recurrent classifier learned online: softmax(W h_t + b) over the classes seen so far.

    ``learn_one(x, y)`` advances the recurrence on x (h_t = f(h_{t−1}, x_t)) and learns from
    the cross-entropy −log p_t(y) by the chosen transport rule; ``predict_proba_one(x)``
    gives the class probabilities on the state a step on x would give, without committing it
    (see :class:`~sparse_rtrl.river.RTRLRegressor` for the semantics and the feature rules).

    Classes are whatever labels ``learn_one`` has seen (any hashable: bool, str, int). A new
    label adds a readout row that starts at zero (its logit 0); the readout's optimizer state
    restarts then, the cell's carries on. Before the first ``learn_one``,
    ``predict_proba_one`` returns {} and ``predict_one`` None.

    Parameters
    ----------
    cell
        "vanilla" (tanh RNN), "lstm" or "gru".
    hidden
        Hidden units n.
    rule
        The gradient transport ("sparse", "full", "immediate", "trace", "snap1", "uoro", "kf",
        "tbptt").
    k
        Paths kept per unit for rule="sparse" (default 4); an error with another rule.
    rule_options
        Further options of the rule, e.g. ``{"window": 16}`` for "tbptt".
    optimizer
        "adam", "adamw", "sgd" or "rmsprop".
    lr
        Learning rate.
    seed
        Seeds the initial weights and the rule's random numbers; None (river's
        convention): a seed drawn at construction; an int: a reproducible run.
    dtype
        "float64" or "float32".

    Examples
    --------

    >>> from river import datasets, evaluate, metrics, preprocessing
    >>> from sparse_rtrl.river import RTRLClassifier
    >>> model = preprocessing.StandardScaler() | RTRLClassifier(hidden=8, k=2, seed=1)
    >>> evaluate.progressive_val_score(datasets.Phishing().take(300), model, metrics.Accuracy())
    Accuracy: ...

    """

    def __init__(self, cell: str = "vanilla", hidden: int = 32, rule: str = "sparse", k: int | None = None,
                 rule_options: dict | None = None, optimizer: str = "adam", lr: float = 1e-2, seed: int | None = None,
                 dtype: str = "float64"):
        self._init_options(cell, hidden, rule, k, rule_options, optimizer, lr, seed, dtype)
        self._classes: list = []

    @property
    def _multiclass(self) -> bool:
        return True

    def _add_class(self, y) -> None:
        """A new label: one more readout row (zeros), swapped into the optimizer's 2nd group."""
        self._classes.append(y)
        old = self._readout
        new = self._new_readout(len(self._classes))
        with torch.no_grad():
            new.weight[: old.out_features] = old.weight
            new.bias[: old.out_features] = old.bias
        group = self._opt.param_groups[1]
        for p in group["params"]:
            self._opt.state.pop(p, None)
        group["params"] = list(new.parameters())
        self._readout = new

    def learn_one(self, x: dict, y) -> None:
        self._check_numeric(x)  # before the model or a new label is added
        if self._learner is None:
            self._classes = [y]
            self._build(x, 1)
        elif y not in self._classes:
            self._add_class(y)
        target = torch.tensor([self._classes.index(y)])
        test_then_train(self._learner, lambda h: self._readout(h).unsqueeze(0), self._vector(x), target,
                        self._opt, loss=nn.functional.cross_entropy)

    @torch.no_grad()
    def predict_proba_one(self, x: dict) -> dict:
        if self._learner is None:
            return {}
        p = torch.softmax(self._readout(self._tentative_hidden(x)), dim=-1).tolist()
        return dict(zip(self._classes, p))

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": 8}
        yield {"cell": "gru", "hidden": 4, "rule": "uoro"}
