"""Simulated electrode drift applied to the counts of a real session."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigurationError
from .session import Session


@dataclass(frozen=True)
class RecordingDrift:
    """Turns a real session into a simulated "later session" of the same array.

    For d = ``drift`` and each channel c, independently (y: the real counts, Δ: the bin):

    1. loss, with probability d·``turnover``: the channel's unit is gone; y_c is replaced by
       untuned noise, Poisson(ν·Δ) per bin;
    2. new unit, with probability d·``appearance``: y_c is replaced by a mixture of two
       other channels a ≠ b, Binomial(y_a, ½) + Binomial(y_b, ½) — a unit whose tuning is
       real but that the old decoder has never seen;
    3. gain g_c = exp(d·σ_g·z), applied by thinning (Binomial(y, g) when g ≤ 1) or by
       adding Poisson((g − 1)·y) spikes (g > 1), so E[y'] = g·y and counts stay integers;
    4. baseline shift β_c = r̄_c·(exp(d·σ_b·z') − 1) Hz (r̄_c: the channel's mean rate):
       Poisson(β_c·Δ) spikes added when β_c > 0, removed (clipped at 0) when β_c < 0;
    5. optionally, slow within-session drift: g_c becomes g_c·exp(σ_w·W_c(t)), W_c a
       Brownian motion in minutes.

    At d = 0 (and σ_w = 0) the counts are returned unchanged. Velocity, times and trials
    are kept; ``source`` says the session is simulated, with d and the seed, so no report
    can mistake it for a recorded second session.

    Randomness: ``numpy.random.default_rng(SeedSequence(seed))``. Each channel's fate
    (uniforms, normals, partners) is drawn first and whatever d is, so results at different
    d share it: the channels lost at d = 0.3 are among those lost at d = 0.6, and gains
    scale with d along the same directions z.
    """

    drift: float = 0.5
    """d ∈ [0, 1], the amount of simulated drift."""
    turnover: float = 0.5
    """Probability, at d = 1, that a channel loses its unit."""
    appearance: float = 0.5
    """Probability, at d = 1, that a new unit (mixture of two other channels) appears."""
    gain_drift: float = 0.5
    """σ_g: standard deviation of log gain at d = 1."""
    baseline_drift: float = 0.5
    """σ_b: standard deviation of the log of (new baseline / mean rate + 1) at d = 1."""
    within_session_drift: float = 0.0
    """σ_w: standard deviation of the log gain's random walk after one minute (0: none)."""
    noise_rate: float = 2.0
    """ν, the rate (Hz) of the untuned noise left on a channel whose unit is lost."""

    def __post_init__(self):
        for name in ("drift", "turnover", "appearance"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigurationError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("gain_drift", "baseline_drift", "within_session_drift", "noise_rate"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigurationError(f"{name} must be ≥ 0, got {getattr(self, name)}")

    def apply(self, session: Session, seed: int) -> Session:
        """The drifted copy of ``session`` (same shape, bins, velocity and channel names)."""
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigurationError(f"seed must be a non-negative int, got {seed!r}")
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        y = session.counts.numpy()
        T, C = y.shape
        dt, d = session.bin_size, float(self.drift)
        u_loss, u_new = rng.uniform(size=C), rng.uniform(size=C)
        z_gain, z_base = rng.standard_normal(C), rng.standard_normal(C)
        # two distinct partners for each channel's possible new unit, neither the channel itself
        partners = np.stack([_others(rng, c, C) for c in range(C)]) if C >= 3 else None
        lost = u_loss < d * self.turnover
        new = (u_new < d * self.appearance) & (partners is not None)

        out = y.copy()
        out[:, lost] = rng.poisson(self.noise_rate * dt, size=(T, int(lost.sum())))
        if new.any():
            a, b = partners[new, 0], partners[new, 1]
            out[:, new] = rng.binomial(y[:, a], 0.5) + rng.binomial(y[:, b], 0.5)

        log_gain = np.broadcast_to(d * self.gain_drift * z_gain, (T, C))
        if self.within_session_drift > 0:
            steps = rng.standard_normal((T, C)) * np.sqrt(dt / 60.0)
            log_gain = log_gain + self.within_session_drift * np.cumsum(steps, axis=0)
        out = _scale(out, np.exp(log_gain), rng)

        mean_rate = y.mean(axis=0) / dt
        shift = mean_rate * np.expm1(d * self.baseline_drift * z_base) * dt  # spikes per bin
        moved = shift != 0
        extra = rng.poisson(np.abs(shift[moved]), size=(T, int(moved.sum())))
        out[:, moved] = np.maximum(out[:, moved] + np.where(shift[moved] > 0, extra, -extra), 0)

        source = f"simulated drift (d={d:g}, seed={seed}) of {session.source}"
        return dataclasses.replace(session, counts=out.astype(np.int64), source=source, simulated=True)


def simulate_drift(session: Session, drift: float, seed: int, **options) -> Session:
    """``RecordingDrift(drift=drift, **options).apply(session, seed)``.

    Example::

        real = load_binned("../shared/data/stevenson2011_m1.mat")
        later = simulate_drift(real, 0.5, seed=0)    # later.source starts "simulated drift"
    """
    return RecordingDrift(drift=drift, **options).apply(session, seed)


def _others(rng: np.random.Generator, c: int, C: int) -> np.ndarray:
    pick = rng.choice(C - 1, size=2, replace=False)
    return pick + (pick >= c)  # skip channel c itself


def _scale(y: np.ndarray, g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer counts with E[y'] = g·y: thinning where g < 1, extra Poisson spikes where g > 1."""
    out = y.copy()
    down, up = g < 1.0, g > 1.0  # g = 1 exactly (d = 0) leaves counts untouched, at no cost
    out[down] = rng.binomial(y[down], g[down])
    out[up] += rng.poisson((g[up] - 1.0) * y[up])
    return out
