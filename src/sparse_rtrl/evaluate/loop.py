"""The prequential (test-then-train) loop: predict → score → learn, one sample at a time."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import DivergenceError, InputError
from ..contract import AbstractOnlineLearner
from ..fused import FusedStep

Tensor = torch.Tensor
Loss = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class StepRecord:
    """What one scored step produced, all of it computed before the model learned from it.

    Attributes:
        t: the step's index in the stream (0-based; unscored steps count too).
        y_hat: the prediction readout(h_t), detached.
        y: the target y_t.
        loss: L_t = loss(ŷ_t, y_t) as a float, or a tuple of floats when the loss has
            several elements (an ensemble's members).
    """

    t: int
    y_hat: Tensor
    y: Tensor
    loss: float | tuple[float, ...]


@dataclass
class PrequentialResult:
    """The outcome of :func:`prequential`.

    Attributes:
        losses: per-step losses ``(T,)`` (or ``(T, m)`` for an m-element loss), recorded
            before learning; NaN on steps without a target; inf on the step that diverged.
        steps: how many stream items were consumed (T).
        diverged_at: the step that raised :class:`DivergenceError` (or gave a non-finite
            loss), or None.
        stopped_by: the callback that ended the run early (its class name), or None.
        seconds: wall-clock time of the loop.
    """

    losses: np.ndarray
    steps: int
    diverged_at: int | None
    stopped_by: str | None
    seconds: float

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(1, self.steps)


def predict_and_score(
    learner: AbstractOnlineLearner, readout: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, loss: Loss
) -> tuple[Tensor, Tensor]:
    """Test: h_t = learner.step(x_t), ŷ_t = readout(h_t), L_t = loss(ŷ_t, y_t).

    A non-finite loss raises before anything is learned: :class:`InputError` when the
    target is NaN or inf, else :class:`DivergenceError`. The learner's state has advanced
    to s_t either way.
    """
    y_hat, value, _ = _score(learner, readout, x, y, loss)
    return y_hat, value


def _score(learner, readout, x, y, loss) -> tuple[Tensor, Tensor, list[float]]:
    """:func:`predict_and_score` plus the loss's values as floats: one host sync for both the
    record and the finiteness check (the target is looked at only when the loss is bad)."""
    h = learner.step(x)
    y_hat = readout(h)
    value = loss(y_hat, y)
    values = value.detach().reshape(-1).tolist()
    if all(math.isfinite(v) for v in values):
        return y_hat, value, values
    if isinstance(y, Tensor) and y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise InputError(f"the target of step {learner.steps - 1} contains NaN or inf: clean the stream (drop "
                         "the sample, or give y = None to step without a score); the state has advanced "
                         "past it, nothing was learned from it")
    raise DivergenceError(learner.steps - 1, "loss",
                          "(The prediction was non-finite for a finite target; the state has advanced "
                          "past it, and nothing was learned from this step.)")


def learn(learner: AbstractOnlineLearner, value: Tensor, optimizer: torch.optim.Optimizer | None) -> None:
    """Train: learner.backward(L_t); optimizer.step(); optimizer.zero_grad().

    A loss with several elements (an ensemble's members) is summed first; each member's
    parameters then get exactly their own gradient. No optimizer: nothing is learned.
    """
    if optimizer is None:
        return
    learner.backward(value if value.numel() == 1 else value.sum())
    optimizer.step()
    optimizer.zero_grad()


def test_then_train(
    learner: AbstractOnlineLearner,
    readout: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer | None,
    loss: Loss = nn.functional.mse_loss,
) -> tuple[Tensor, Tensor]:
    """One prequential step, :func:`predict_and_score` then :func:`learn`; returns (ŷ_t, L_t),
    both computed before the update."""
    y_hat, value = predict_and_score(learner, readout, x, y, loss)
    learn(learner, value, optimizer)
    return y_hat, value


test_then_train.__test__ = False  # not a test, though pytest would collect it by its name


def _unpack(item: Any, t: int) -> tuple[Tensor, Tensor | None, bool]:
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        x, y = item[0], item[1]
        reset = bool(item[2]) if len(item) == 3 else False
        return x, y, reset
    raise InputError(
        f"stream item {t} is a {type(item).__name__}: a prequential stream yields (x, y) or "
        "(x, y, starts_new_sequence) tuples, with y = None for a step that is not scored"
    )


def prequential(
    learner: AbstractOnlineLearner,
    readout: Callable[[Tensor], Tensor],
    stream: Iterable,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    loss: Loss = nn.functional.mse_loss,
    callbacks: Sequence[Any] = (),
    on_divergence: str = "stop",
) -> PrequentialResult:
    """Prequential (test-then-train) evaluation of an online recurrent learner.

    Every sample is first used to test the model, then to train it: at step t,
    ŷ_t = readout(h_t) with h_t = f(h_{t−1}, x_t), the loss L_t = loss(ŷ_t, y_t) is recorded
    with the parameters θ_{t−1} that have not seen y_t, and only then does the learner take
    the transported gradient of L_t and the optimizer step to θ_t. The mean of L_t over the
    stream is the prequential error (Dawid 1984), river's ``progressive_val_score``.

    With no callbacks, no resets and targets on every step, this function is exactly::

        for x, y in stream:
            h = learner.step(x)
            l = loss(readout(h), y)
            learner.backward(l)
            optimizer.step(); optimizer.zero_grad()

    (with the losses recorded); the tests check it bit for bit against that loop.

    Args:
        learner: any online learner of the library's contract — an
            :class:`~sparse_rtrl.OnlineLearner` (any rule, cell, batch or ensemble) or an
            :class:`~sparse_rtrl.transformer.OnlineTransformer` — or an object with the same
            ``step``, ``backward``, ``reset_state`` and ``steps``. Or a
            :class:`~sparse_rtrl.fused.FusedStep`, which brings its own readout, loss and
            optimizer: ``prequential(fused, None, stream)``.
        readout: maps h_t to the prediction (any module or function, e.g. ``nn.Linear``).
        stream: yields ``(x, y)`` or ``(x, y, starts_new_sequence)``. ``y = None``: the
            learner steps on x without a score or an update (a warm-up or unlabelled step).
            ``starts_new_sequence``: ``learner.reset_state()`` before stepping.
        optimizer: any ``torch.optim`` optimizer over the parameters to learn (the learner's
            and the readout's); None scores without learning (a frozen model).
        loss: ``loss(y_hat, y)`` → a tensor; default mean squared error. An m-element
            loss (an ensemble's members) is recorded per element and summed to learn.
        callbacks: objects with any of ``on_step(record) -> stop?``, ``on_learned(record)``,
            ``on_skip(t)`` and ``on_end(result)`` (see :mod:`sparse_rtrl.evaluate.callbacks`:
            running error, recorders, progress bars, divergence guards). ``on_step`` runs
            after the score and before the update; a truthy return ends the run there,
            unlearned. ``on_learned`` runs after the update (with no optimizer: after the
            score), to read what learning changed.
        on_divergence: ``"stop"`` (default) ends the run at a :class:`DivergenceError`
            or a non-finite loss and reports the step in ``diverged_at``; ``"raise"``
            lets the error propagate.

    Returns:
        a :class:`PrequentialResult`.

    Example::

        >>> import torch
        >>> from sparse_rtrl import OnlineLearner, VanillaRNN
        >>> from sparse_rtrl.evaluate import prequential
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> learner, readout = OnlineLearner(VanillaRNN(1, 8), "sparse", k=2), torch.nn.Linear(8, 1)
        >>> opt = torch.optim.Adam([*learner.parameters(), *readout.parameters()], lr=1e-2)
        >>> x = torch.sin(torch.arange(201) * 0.3).unsqueeze(-1)
        >>> result = prequential(learner, readout, zip(x[:-1], x[1:]), opt)
        >>> result.steps, bool(result.losses[-50:].mean() < result.losses[:50].mean())
        (200, True)
    """
    if on_divergence not in ("stop", "raise"):
        raise InputError(f"on_divergence must be 'stop' or 'raise', got {on_divergence!r}")
    model = _Model.of(learner, readout, optimizer, loss)
    on_step = [cb.on_step for cb in callbacks if hasattr(cb, "on_step")]
    on_learned = [cb.on_learned for cb in callbacks if hasattr(cb, "on_learned")]
    on_skip = [cb.on_skip for cb in callbacks if hasattr(cb, "on_skip")]
    losses: list[Any] = []
    width = None
    diverged_at = stopped_by = None
    t = -1
    t0 = time.perf_counter()
    for t, item in enumerate(stream):
        x, y, reset = _unpack(item, t)
        try:
            if reset:
                learner.reset_state()
            if y is None:
                model.advance(x)
                losses.append(math.nan)
                for f in on_skip:
                    f(t)
                continue
            y_hat, value, vals = model.score(x, y)  # predict → score
            width = len(vals) if width is None else width
            score = vals[0] if len(vals) == 1 else tuple(vals)
            losses.append(score)
            record = StepRecord(t, y_hat.detach(), y, score)
            stop = False
            for f in on_step:
                stop = bool(f(record)) or stop
                if stop and stopped_by is None:
                    stopped_by = type(getattr(f, "__self__", f)).__name__
            if stop:
                break
            model.learn(value)  # → learn, after the callbacks have seen the score
            for f in on_learned:
                f(record)
        except DivergenceError:
            if optimizer is not None:
                optimizer.zero_grad()  # nothing half-accumulated is left for a later step
            if on_divergence == "raise":
                raise
            diverged_at = t
            if len(losses) == t:  # the step failed before its score was recorded
                losses.append(math.inf)
            # else: the score was recorded before the update failed, and callbacks saw it: kept
            break
    result = PrequentialResult(
        _as_array(losses, width or 1), t + 1, diverged_at, stopped_by, time.perf_counter() - t0
    )
    for cb in callbacks:
        if hasattr(cb, "on_end"):
            cb.on_end(result)
    return result


class _Model:
    """The loop's three moves for a learner + readout + loss + optimizer."""

    def __init__(self, learner, readout, optimizer, loss):
        self.learner, self.readout, self.optimizer, self.loss = learner, readout, optimizer, loss

    @staticmethod
    def of(learner, readout, optimizer, loss) -> "_Model":
        if not isinstance(learner, FusedStep):
            return _Model(learner, readout, optimizer, loss)
        if readout is not None or optimizer is not None or loss is not nn.functional.mse_loss:
            raise InputError("a FusedStep brings its own readout, loss and optimizer: call "
                             "prequential(fused, None, stream) (loss and optimizer left out)")
        return _Fused(learner)

    def advance(self, x: Tensor) -> None:
        self.learner.step(x)

    def score(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, list[float]]:
        return _score(self.learner, self.readout, x, y, self.loss)

    def learn(self, value: Tensor) -> None:
        learn(self.learner, value, self.optimizer)


class _Fused(_Model):
    """The same moves for a :class:`~sparse_rtrl.fused.FusedStep` (score, then learn)."""

    def __init__(self, fused):
        self.learner = fused

    def advance(self, x: Tensor) -> None:
        self.learner.advance(x)

    def score(self, x: Tensor, y: Tensor) -> tuple[Tensor, None, list[float]]:
        y_hat, value = self.learner.score(x, y)
        return y_hat, None, [value]

    def learn(self, value) -> None:
        self.learner.learn()


def _as_array(losses: list[Any], width: int) -> np.ndarray:
    if width == 1:
        return np.asarray(losses, dtype=float)
    out = np.full((len(losses), width), np.nan)
    for i, v in enumerate(losses):
        out[i] = v
    return out
