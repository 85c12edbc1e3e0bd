"""Offline minibatch training: the one pretraining loop of the library and the experiments.

A model-specific ``batch_loss()`` draws a minibatch and returns its loss; :func:`fit` does
the rest (Adam, optional gradient-norm clipping) and records every update's loss. The
transformer's :func:`sparse_rtrl.transformer.pretrain` and the experiments' pretraining of
recurrent cells both run through it, so they differ only in how a batch is drawn and scored.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn


def fit(params: Iterable[nn.Parameter], batch_loss: Callable[[], torch.Tensor], updates: int,
        lr: float, clip_norm: float | None = None) -> torch.Tensor:
    """``updates`` Adam steps (rate ``lr``) on ``params``, each on the loss that one call of
    ``batch_loss()`` returns; the gradient's global norm is clipped at ``clip_norm`` when given.
    Returns the losses of the updates, in order, as a float64 tensor ``(updates,)``.
    """
    params = list(params)
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(updates):
        loss = batch_loss()
        opt.zero_grad()
        loss.backward()
        if clip_norm is not None:
            nn.utils.clip_grad_norm_(params, clip_norm)
        opt.step()
        losses.append(float(loss.detach()))
    return torch.tensor(losses, dtype=torch.float64)
