"""Callbacks for :func:`~sparse_rtrl.evaluate.prequential`: running error, a recorder of the
predictions, any river-style metric, a progress bar and a divergence guard.

A callback is any object with some of ``on_step(record) -> stop?`` (after the score, before
the update), ``on_skip(t)`` (a step without a target) and ``on_end(result)``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from .loop import PrequentialResult, StepRecord


def _errors(record: StepRecord) -> np.ndarray:
    """e_t = ŷ_t − y_t, flattened."""
    y_hat = record.y_hat.detach().double().reshape(-1).cpu().numpy()
    y = np.asarray(record.y.detach().double().reshape(-1).cpu() if hasattr(record.y, "detach") else record.y,
                   dtype=float).reshape(-1)
    return y_hat - y


class RunningError:
    """Prequential MAE = mean_t |e_t| and RMSE = √(mean_t e_t²) of e_t = ŷ_t − y_t (averaged
    over the target's elements too), over the whole stream and over the last ``window`` steps.

    O(window) memory; read ``mae``, ``rmse``, ``window_mae``, ``window_rmse`` at any time.
    """

    def __init__(self, window: int = 100):
        if window < 1:
            raise ValueError(f"window must be ≥ 1, got {window}")
        self.window = window
        self.n = 0
        self._abs = self._sq = 0.0
        self._recent: deque[tuple[float, float]] = deque(maxlen=window)

    def on_step(self, record: StepRecord) -> None:
        e = _errors(record)
        a, s = float(np.abs(e).mean()), float((e * e).mean())
        self.n += 1
        self._abs += a
        self._sq += s
        self._recent.append((a, s))

    @property
    def mae(self) -> float:
        return self._abs / self.n if self.n else math.nan

    @property
    def rmse(self) -> float:
        return math.sqrt(self._sq / self.n) if self.n else math.nan

    @property
    def window_mae(self) -> float:
        return float(np.mean([a for a, _ in self._recent])) if self._recent else math.nan

    @property
    def window_rmse(self) -> float:
        return math.sqrt(float(np.mean([s for _, s in self._recent]))) if self._recent else math.nan

    def summary(self) -> dict[str, float]:
        return {"n": self.n, "mae": self.mae, "rmse": self.rmse,
                f"mae_last_{self.window}": self.window_mae, f"rmse_last_{self.window}": self.window_rmse}


class Recorder:
    """Keeps every scored step's t, prediction ŷ_t and target y_t (O(T) memory).

    ``arrays()`` gives ``t (T,)``, ``y_hat (T, d)``, ``y (T, d)``.
    """

    def __init__(self):
        self.t: list[int] = []
        self.y_hat: list[np.ndarray] = []
        self.y: list[np.ndarray] = []

    def on_step(self, record: StepRecord) -> None:
        self.t.append(record.t)
        self.y_hat.append(record.y_hat.detach().double().reshape(-1).cpu().numpy())
        y = record.y.detach().double().reshape(-1).cpu().numpy() if hasattr(record.y, "detach") else record.y
        self.y.append(np.asarray(y, dtype=float).reshape(-1))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.t:
            return np.zeros(0, dtype=int), np.zeros((0, 0)), np.zeros((0, 0))
        return np.asarray(self.t), np.stack(self.y_hat), np.stack(self.y)


class Metric:
    """Feeds (y, ŷ) as floats to a river-style metric: anything with ``update(y_true, y_pred)``
    (``river.metrics.MAE()``, ...). A one-element target is passed as a float."""

    def __init__(self, metric: Any):
        if not hasattr(metric, "update"):
            raise TypeError(f"{type(metric).__name__} has no update(y_true, y_pred) method")
        self.metric = metric

    def on_step(self, record: StepRecord) -> None:
        y_hat = record.y_hat.detach().reshape(-1).tolist()
        y = record.y.detach().reshape(-1).tolist() if hasattr(record.y, "detach") else record.y
        y = y if not isinstance(y, list) else (y[0] if len(y) == 1 else y)
        self.metric.update(y, y_hat[0] if len(y_hat) == 1 else y_hat)


class Progress:
    """A tqdm progress bar, one tick per stream item, showing a running error if given.

    Args:
        total: the stream's length if known (for an ETA).
        error: a :class:`RunningError` to show (MAE over its window) every ``every`` steps.
        disable: no bar (e.g. when not on a terminal).
        label: the error's name on the bar.
    """

    def __init__(self, total: int | None = None, error: RunningError | None = None, every: int = 50,
                 disable: bool = False, desc: str = "prequential", label: str = "mae"):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, disable=disable, desc=desc, unit="step")
        self.error, self.every, self.label, self._n = error, max(1, every), label, 0

    def _tick(self) -> None:
        self._n += 1
        self.bar.update(1)
        if self.error is not None and self._n % self.every == 0:
            self.bar.set_postfix({self.label: f"{self.error.window_mae:.4g}"}, refresh=False)

    def on_step(self, record: StepRecord) -> None:
        self._tick()

    def on_skip(self, t: int) -> None:
        self._tick()

    def on_end(self, result: PrequentialResult) -> None:
        self.bar.close()


class StopOnDivergence:
    """Ends the run (before the update) when a loss exceeds ``max_loss``: a model that has
    blown up but not yet reached inf. Non-finite losses end the run in any case."""

    def __init__(self, max_loss: float = 1e6):
        self.max_loss = max_loss
        self.stopped_at: int | None = None

    def on_step(self, record: StepRecord) -> bool:
        losses = record.loss if isinstance(record.loss, tuple) else (record.loss,)
        if max(losses) > self.max_loss:
            self.stopped_at = record.t
            return True
        return False
