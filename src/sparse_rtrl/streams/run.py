"""One-step-ahead prequential forecasting of a :class:`Series` and the files that report it."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._json import json_safe
from ..errors import ConfigurationError
from ..evaluate import Progress, Recorder, RunningError, prequential
from ..fused import FusedStep, unsupported
from .model import DTYPES, build_model
from .series import ForecastingStream, Series


@dataclass(frozen=True)
class StreamConfig:
    """The model and how it learns (names as in :func:`~sparse_rtrl.streams.model.build_model`).

    Attributes:
        cell: "vanilla", "lstm" or "gru".
        hidden: hidden units n.
        rule: the transport rule ("sparse", "full", "immediate", "uoro", "tbptt", ...).
        k: paths per unit for "sparse" (default 4).
        options: further rule options, e.g. {"window": 16} for "tbptt".
        optimizer: "adam", "adamw", "sgd" or "rmsprop".
        lr: learning rate.
        seed: seeds the weights and the rule's random numbers.
        lagged_target: whether the model sees the previous row's target (autoregression).
        difference: forecast the change from the last value, y_t − y_{t−1}, instead of the level.
        dtype: "float64" or "float32".
        engine: "auto" — the fused step (:class:`~sparse_rtrl.FusedStep`: the same numbers to
            round-off, several times faster) where it applies (vanilla cell; full, sparse,
            snap1, trace or immediate; Adam or SGD), else the learner; "learner" — always
            ``OnlineLearner`` + readout + ``torch.optim``; "fused" — the fused step or an error.
    """

    cell: str = "vanilla"
    hidden: int = 32
    rule: str = "sparse"
    k: int | None = None
    options: dict = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 3e-3
    seed: int = 0
    lagged_target: bool = True
    difference: bool = False
    dtype: str = "float64"
    engine: str = "auto"


@dataclass
class StreamRun:
    """The outcome: per scored row its index, the target, the forecast; and the run's facts."""

    rows: np.ndarray
    y: np.ndarray
    y_hat: np.ndarray
    seconds: float
    diverged_at: int | None
    engine: str = "learner"  # what stepped the model: "fused" or "learner"

    @property
    def errors(self) -> np.ndarray:
        return self.y_hat - self.y


def forecast(series: Series, config: StreamConfig = StreamConfig(), progress: bool = False) -> StreamRun:
    """Prequential one-step-ahead forecasting of ``series`` through
    :func:`sparse_rtrl.evaluate.prequential`: at row t the model forecasts y_t from the rows
    before it and x_t (see :class:`~sparse_rtrl.streams.series.ForecastingStream` for the
    causal scaling), is scored, then learns from y_t."""
    fs = ForecastingStream.from_series(series, lagged_target=config.lagged_target, difference=config.difference)
    dtype = DTYPES[config.dtype]
    learner, readout, opt = build_model(
        fs.inputs.shape[1], 1, cell=config.cell, hidden=config.hidden, rule=config.rule, k=config.k,
        options=config.options or None, optimizer=config.optimizer, lr=config.lr, seed=config.seed,
        dtype=config.dtype)
    why = fused_unsupported(config, learner)
    if config.engine == "fused" and why:
        raise ConfigurationError(f"engine='fused' cannot run this model: {why}; use engine='auto'")
    if config.engine != "learner" and not why:
        # the same initialisation and seeded rule, stepped by the fused step
        learner, readout, opt = FusedStep(learner.cell, learner.transport, readout, optimizer=config.optimizer,
                                          lr=config.lr), None, None
    u = torch.as_tensor(fs.inputs, dtype=dtype)
    z = torch.as_tensor(fs.targets, dtype=dtype).reshape(-1, 1)
    stream = ((u[t], z[t] if t >= fs.warmup else None) for t in range(len(series)))
    rec = Recorder()
    callbacks: list[Any] = [rec]
    if progress:
        err = RunningError(window=100)
        callbacks = [err, rec, Progress(total=len(series), error=err, desc=series.name, label="mae_scaled")]
    result = prequential(learner, readout, stream, opt, callbacks=callbacks)
    rows, z_hat, _ = rec.arrays()
    rows = rows[: len(z_hat)]
    if result.diverged_at is not None and len(rows) and rows[-1] == result.diverged_at:
        rows, z_hat = rows[:-1], z_hat[:-1]  # the diverged step's forecast is not a forecast
    y_hat = fs.unscale(z_hat.reshape(-1), rows)
    return StreamRun(rows, series.y[rows], y_hat, result.seconds, result.diverged_at,
                     "fused" if isinstance(learner, FusedStep) else "learner")


def fused_unsupported(config: StreamConfig, learner) -> str | None:
    """Why the fused step cannot run this stream's model (None: it can)."""
    if config.engine not in ("auto", "fused", "learner"):
        raise ConfigurationError(f"engine must be 'auto', 'fused' or 'learner', got {config.engine!r}")
    if config.cell != "vanilla":
        return f"it runs the vanilla cell, not {config.cell!r}"
    if config.optimizer not in ("adam", "sgd"):
        return f"it runs Adam and SGD, not {config.optimizer!r}"
    return unsupported(learner.transport)


def summary(series: Series, config: StreamConfig, run: StreamRun) -> dict[str, Any]:
    """MAE, RMSE and, for scale, those of the last-value forecast ŷ_t = y_{t−1} on the same rows."""
    e = run.errors
    naive = series.y[run.rows - 1] - series.y[run.rows] if len(run.rows) else np.zeros(0)
    mean = lambda a: float(a.mean()) if len(a) else math.nan  # noqa: E731
    return {
        "source": series.name, "target": series.target, "features": list(series.features),
        "rows": len(series), "scored_rows": int(len(run.rows)),
        "first_scored_row": int(run.rows[0]) if len(run.rows) else None,
        "config": asdict(config),
        "mae": mean(np.abs(e)), "rmse": math.sqrt(mean(e * e)) if len(e) else math.nan,
        "last_value_mae": mean(np.abs(naive)), "last_value_rmse": math.sqrt(mean(naive * naive)) if len(e) else math.nan,
        "engine": run.engine, "seconds": run.seconds, "seconds_per_row": run.seconds / max(1, len(series)),
        "diverged_at": run.diverged_at, "change_points": list(series.change_points),
    }


def write_outputs(out: str | Path, series: Series, config: StreamConfig, run: StreamRun) -> dict[str, Any]:
    """``predictions.csv`` (row, y, y_hat, abs_error, running_mae, running_rmse) and
    ``summary.json`` in ``out``; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    e = run.errors
    n = np.arange(1, len(e) + 1)
    running_mae = np.cumsum(np.abs(e)) / n
    running_rmse = np.sqrt(np.cumsum(e * e) / n)
    with (out / "predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", series.target, "y_hat", "abs_error", "running_mae", "running_rmse"])
        for i in range(len(e)):
            w.writerow([int(run.rows[i]), repr(float(run.y[i])), repr(float(run.y_hat[i])), repr(float(abs(e[i]))),
                        repr(float(running_mae[i])), repr(float(running_rmse[i]))])
    s = summary(series, config, run)
    (out / "summary.json").write_text(json.dumps(json_safe(s), indent=2, allow_nan=False) + "\n")
    return s

