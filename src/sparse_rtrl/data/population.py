"""A synthetic population of cosine-tuned channels whose recording drifts across sessions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigurationError
from .reaching import reach_trajectory
from .session import Session

Tensor = torch.Tensor

# SeedSequence spawn keys: one independent stream per purpose and session, so that changing
# `drift` (or the number of sessions) leaves the other streams — the reaches, the base
# tuning, the standard-normal drift directions — exactly as they were. Sweeps over drift
# then compare like with like (common random numbers).
_INITIAL, _TRANSITION, _BEHAVIOUR, _NOISE = range(4)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@dataclass(frozen=True, eq=False)
class Tuning:
    """Tuning of every channel in one session (the generator's ground truth).

    λ_c(t) = ν + w_c(t)·g_c·[b_c + m_c·(cos φ_c, sin φ_c)·v(t)/v_ref]₊ on a channel that
    holds a unit, λ_c = ν on one that does not (ν: the noise floor, w_c: within-session drift).

    Attributes:
        direction: ``(C,)`` preferred direction φ_c (radians).
        depth: ``(C,)`` modulation depth m_c (Hz at speed v_ref along φ_c).
        baseline: ``(C,)`` baseline rate b_c (Hz).
        gain: ``(C,)`` channel gain g_c (1 in the first session).
        unit: ``(C,)`` int64 identity of the unit on each channel (a new number whenever a
            new unit appears), −1 on a channel that holds none.
    """

    direction: Tensor
    depth: Tensor
    baseline: Tensor
    gain: Tensor
    unit: Tensor

    @property
    def occupied(self) -> Tensor:
        return self.unit >= 0


@dataclass(frozen=True)
class DriftingPopulation:
    """Sessions of a simulated 96-channel array recorded during reaching, with electrode drift.

    Model. Velocity v(t): successive minimum-jerk reaches to random targets (see
    :func:`~sparse_rtrl.data.reaching.reach_trajectory`). Channel c holds at most one unit,
    cosine-tuned to velocity; its rate (see :class:`Tuning`) is
    λ_c(t) = ν + w_c(t)·g_c·[b_c + m_c·u_c·v(t)/v_ref]₊, and its count in bin t is
    y_{t,c} ~ Poisson(λ_c(t)·Δ·G_{t,c}), with G ≡ 1 (Poisson) or G ~ Gamma(1/α, α)
    (gamma-Poisson: Var y = μ + α μ²). Within a session, log w_c performs a Gaussian random
    walk with standard deviation σ_w after one minute (w_c(0) = 1).

    Between consecutive sessions, with d = ``drift`` ∈ [0, 1]: a channel's unit is lost with
    probability d·``turnover``; a new unit (fresh φ, m, b) appears on a channel with
    probability d·``appearance`` (replacing any unit there); log g_c moves by
    d·σ_g·N(0, 1) and log b_c by d·σ_b·N(0, 1). At d = 0 every session has the same tuning,
    so sessions differ only by their reaches, spike noise and within-session drift.

    Randomness comes from ``numpy.random.SeedSequence(seed, spawn_key=…)``, one stream per
    purpose and session: the same seed gives the same sessions (for a given numpy
    version), and sessions at different ``drift`` share their reaches and drift directions.

    Example::

        >>> from sparse_rtrl.data import DriftingPopulation
        >>> a, b = DriftingPopulation(drift=0.5, duration=60.0).sessions(2, seed=0)
        >>> tuple(a.counts.shape), tuple(b.velocity.shape)
        ((1200, 96), (1200, 2))
    """

    n_channels: int = 96
    """C, the number of electrode channels (one count column each)."""
    bin_size: float = 0.05
    """Δ, the bin width in seconds."""
    duration: float = 600.0
    """Length of each session in seconds (T = round(duration / Δ) bins)."""
    drift: float = 0.5
    """d ∈ [0, 1], the amount of drift between consecutive sessions (0: none)."""
    turnover: float = 0.5
    """Probability, at d = 1, that a channel loses its unit between two sessions."""
    appearance: float = 0.5
    """Probability, at d = 1, that a new unit appears on a channel between two sessions."""
    occupancy: float = 0.9
    """Fraction of channels that hold a unit in the first session."""
    gain_drift: float = 0.5
    """σ_g: standard deviation of the change of log gain between sessions at d = 1."""
    baseline_drift: float = 0.5
    """σ_b: standard deviation of the change of log baseline between sessions at d = 1."""
    within_session_drift: float = 0.05
    """σ_w: standard deviation of log w_c after one minute of a session (0: none)."""
    baseline_rate: tuple[float, float] = (5.0, 25.0)
    """Range (Hz) of the uniform distribution of baselines b_c."""
    depth: tuple[float, float] = (5.0, 25.0)
    """Range (Hz) of the uniform distribution of modulation depths m_c."""
    reference_speed: float = 20.0
    """v_ref, the speed at which a unit's rate changes by m_c (workspace units per s)."""
    noise_rate: float = 2.0
    """ν, the rate (Hz) of untuned threshold crossings on every channel."""
    dispersion: float = 0.0
    """α ≥ 0: 0 gives Poisson counts, α > 0 gamma-Poisson with Var = μ + α μ²."""
    workspace: float = 10.0
    """Radius of the disc of reach targets (cm-like units)."""
    reach_duration: tuple[float, float] = (0.6, 1.2)
    """Range (s) of the uniform distribution of movement durations."""
    hold_duration: tuple[float, float] = (0.1, 0.5)
    """Range (s) of the uniform distribution of holds before each reach."""

    def __post_init__(self):
        if int(self.n_channels) < 1:
            raise ConfigurationError(f"n_channels must be ≥ 1, got {self.n_channels}")
        for name in ("bin_size", "duration", "reference_speed", "workspace"):
            if not float(getattr(self, name)) > 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("drift", "turnover", "appearance", "occupancy"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigurationError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("gain_drift", "baseline_drift", "within_session_drift", "noise_rate", "dispersion"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigurationError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        for name in ("baseline_rate", "depth", "reach_duration", "hold_duration"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ConfigurationError(f"{name} must be a range (low, high) with 0 ≤ low ≤ high, got {(lo, hi)}")
        if self.reach_duration[0] <= 0:
            raise ConfigurationError(f"reach_duration must be positive, got {self.reach_duration}")
        if round(self.duration / self.bin_size) < 1:
            raise ConfigurationError("duration must hold at least one bin")

    @property
    def n_bins(self) -> int:
        return int(round(self.duration / self.bin_size))

    def tunings(self, n_sessions: int, seed: int) -> list[Tuning]:
        """The tuning of sessions 0 … n_sessions − 1, each drifted from the one before."""
        _check_request(n_sessions, seed)
        C = self.n_channels
        rng = _rng(seed, _INITIAL)
        direction, depth, baseline = self._fresh_units(rng, C)
        unit = np.where(rng.uniform(size=C) < self.occupancy, np.arange(C), -1)
        gain = np.ones(C)
        next_id = C
        out = [_tuning(direction, depth, baseline, gain, unit)]
        d = float(self.drift)
        for s in range(1, n_sessions):
            rng = _rng(seed, _TRANSITION, s)
            # draw everything every time, whatever d is, so streams stay aligned across d
            u_loss, u_new = rng.uniform(size=C), rng.uniform(size=C)
            z_gain, z_base = rng.standard_normal(C), rng.standard_normal(C)
            new_direction, new_depth, new_baseline = self._fresh_units(rng, C)
            lost = (unit >= 0) & (u_loss < d * self.turnover)
            new = u_new < d * self.appearance
            gain = gain * np.exp(d * self.gain_drift * z_gain)
            baseline = baseline * np.exp(d * self.baseline_drift * z_base)
            unit = np.where(lost, -1, unit)
            unit = np.where(new, next_id + np.arange(C), unit)
            next_id += C
            direction = np.where(new, new_direction, direction)
            depth = np.where(new, new_depth, depth)
            baseline = np.where(new, new_baseline, baseline)
            out.append(_tuning(direction, depth, baseline, gain, unit))
        return out

    def sessions(self, n_sessions: int, seed: int) -> list[Session]:
        """Sessions 0 … n_sessions − 1: counts ``(T, C)``, velocity ``(T, 2)``, reach index."""
        tunings = self.tunings(n_sessions, seed)
        return [self._session(tuning, s, seed) for s, tuning in enumerate(tunings)]

    def rates(self, tuning: Tuning, velocity: np.ndarray, within: np.ndarray | None = None) -> np.ndarray:
        """λ ``(T, C)`` in Hz for velocity ``(T, 2)`` and within-session factors w ``(T, C)``."""
        phi = tuning.direction.numpy()
        drive = tuning.baseline.numpy() + tuning.depth.numpy() * (
            velocity[:, :1] * np.cos(phi) + velocity[:, 1:] * np.sin(phi)) / self.reference_speed
        tuned = tuning.gain.numpy() * np.maximum(drive, 0.0)
        if within is not None:
            tuned = tuned * within
        return self.noise_rate + np.where(tuning.occupied.numpy(), tuned, 0.0)

    def _session(self, tuning: Tuning, s: int, seed: int) -> Session:
        T, C, dt = self.n_bins, self.n_channels, self.bin_size
        velocity, reach = reach_trajectory(
            T, dt, _rng(seed, _BEHAVIOUR, s), workspace=self.workspace,
            reach_duration=self.reach_duration, hold_duration=self.hold_duration)
        rng = _rng(seed, _NOISE, s)
        # log w: Brownian motion in minutes, so σ_w is the s.d. after one minute
        steps = rng.standard_normal((T, C)) * np.sqrt(dt / 60.0)
        within = np.exp(self.within_session_drift * np.cumsum(steps, axis=0))
        mean = self.rates(tuning, velocity, within) * dt
        if self.dispersion > 0:
            shape = 1.0 / self.dispersion
            mean = mean * rng.gamma(shape, 1.0 / shape, size=mean.shape)
        counts = rng.poisson(mean)
        return Session(
            counts=counts, velocity=velocity, bin_times=np.arange(T) * dt,
            channel_names=tuple(f"ch{c:03d}" for c in range(C)), bin_size=dt,
            source=f"synthetic DriftingPopulation(seed={seed}, drift={self.drift:g}), session {s}",
            trial_id=reach, simulated=True)

    def _fresh_units(self, rng: np.random.Generator, C: int):
        direction = rng.uniform(0.0, 2.0 * np.pi, size=C)
        depth = rng.uniform(*self.depth, size=C)
        baseline = rng.uniform(*self.baseline_rate, size=C)
        return direction, depth, baseline


def _tuning(direction, depth, baseline, gain, unit) -> Tuning:
    f64 = torch.float64
    return Tuning(torch.tensor(direction, dtype=f64), torch.tensor(depth, dtype=f64),
                  torch.tensor(baseline, dtype=f64), torch.tensor(gain, dtype=f64),
                  torch.tensor(unit, dtype=torch.int64))


def _check_request(n_sessions, seed):
    if int(n_sessions) < 1:
        raise ConfigurationError(f"n_sessions must be ≥ 1, got {n_sessions}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative int (an explicit seed makes "
                                 f"sessions reproducible), got {seed!r}")
