"""A real-valued series to forecast one step ahead, and its causal (prequential) scaling."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Series:
    """A stream of rows: exogenous features ``X (T, F)`` (F may be 0) and a target ``y (T,)``.

    Attributes:
        name: where it came from (a file path or ``river:NAME``).
        target: the target's column name.
        features: the feature columns' names, in X's column order.
        X, y: float64 arrays, finite.
        change_points: annotated change points (row indices), if the source has any.
    """

    name: str
    target: str
    features: tuple[str, ...]
    X: np.ndarray
    y: np.ndarray
    change_points: tuple[int, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.y)


def running_moments(values: np.ndarray, include_current: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean m_t and standard deviation σ_t of ``values (T, d)`` over rows τ ≤ t
    (``include_current``) or τ < t, by Welford's update; σ_t is 1 where fewer than two rows
    are in the window or the spread is 0, so that (v − m)/σ is always defined."""
    T, d = values.shape
    mean, std = np.zeros((T, d)), np.ones((T, d))
    m, s, n = np.zeros(d), np.zeros(d), 0
    for t in range(T):
        if not include_current:
            mean[t], std[t] = m, _std(s, n)
        n += 1
        delta = values[t] - m
        m = m + delta / n
        s = s + delta * (values[t] - m)
        if include_current:
            mean[t], std[t] = m, _std(s, n)
    return mean, std


def _std(s: np.ndarray, n: int) -> np.ndarray:
    if n < 2:
        return np.ones_like(s)
    sd = np.sqrt(s / (n - 1))
    return np.where(sd > 1e-12 * (1 + np.abs(s)), sd, 1.0)


@dataclass(frozen=True)
class ForecastingStream:
    """The model's view of a :class:`Series` for one-step-ahead forecasting, scaled causally.

    The model forecasts r_t = y_t − b_t: the level (b_t = 0) or, with ``difference``, the
    change from the last value (b_t = y_{t−1}). At row t it sees
    u_t = [(x_t − m^x_t)/σ^x_t, (r_{t−1} − m^l_t)/σ^l_t] (statistics over rows ≤ t: x_t and
    r_{t−1} are known when forecasting) and learns z_t = (r_t − m^r_t)/σ^r_t, with m^r_t,
    σ^r_t over rows < t only, so nothing of y_t leaks into its own forecast. The forecast is
    ŷ_t = b_t + m^r_t + σ^r_t ẑ_t. The first ``warmup`` rows (no scale for r yet) are stepped
    through but neither scored nor learned from.
    """

    inputs: np.ndarray  # (T, F [+ 1])
    targets: np.ndarray  # (T,) z_t
    base: np.ndarray  # (T,) b_t
    target_mean: np.ndarray  # (T,)
    target_std: np.ndarray  # (T,)
    warmup: int

    @classmethod
    def from_series(cls, series: Series, lagged_target: bool = True, difference: bool = False) -> "ForecastingStream":
        y = series.y
        T, s = len(y), int(difference)  # with differencing, row 0 has no change to learn
        base = np.zeros(T)
        if difference:
            base[1:] = y[:-1]
        r = y - base
        mr, sr = np.zeros(T), np.ones(T)
        if T > s:
            m, sd = running_moments(r[s:, None], include_current=False)
            mr[s:], sr[s:] = m[:, 0], sd[:, 0]
        cols = []
        if series.X.shape[1]:
            mx, sx = running_moments(series.X, include_current=True)
            cols.append((series.X - mx) / sx)
        if lagged_target:
            lag = np.zeros((T, 1))
            lag[s + 1:, 0] = r[s:-1]
            ml, sl = running_moments(lag, include_current=True)
            cols.append((lag - ml) / sl)
        if not cols:
            raise InputError("no inputs: this stream has no feature columns and --no-lagged-target drops the "
                             "previous target too; give --features or keep the lagged target")
        return cls(np.concatenate(cols, axis=1), (r - mr) / sr, base, mr, sr, s + 2)

    def unscale(self, z_hat: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """ŷ = b + m^r + σ^r ẑ at the given rows."""
        return self.base[rows] + self.target_mean[rows] + self.target_std[rows] * z_hat
