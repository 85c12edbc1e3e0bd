"""Prediction of the normalised Lorenz-63 state; the shift changes the system's parameters."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .base import (
    AbstractTask,
    Segments,
    Stream,
    check_count,
    check_float,
    continuous_stream,
    fmt,
    set_field,
    stream_generator,
)

Tensor = torch.Tensor

#: the seed of the regime-A reference trajectories that fix the normalisation
REFERENCE_SEED = 20260315
REFERENCE_TRAJECTORIES = 256
REFERENCE_SAMPLES = 250


def lorenz_rk4(
    state: tuple[Any, Any, Any], sigma: float, rho: float, beta: float, h: float, n: int
) -> tuple[Any, Any, Any]:
    """n classical Runge–Kutta steps of size h of Lorenz-63,

        ẋ = σ(y − x),   ẏ = x(ρ − z) − y,   ż = xy − βz.

    ``state`` is (x, y, z) of Python floats (one trajectory, fastest) or of equal-shape
    NumPy arrays (a batch of trajectories); returns the new (x, y, z) of the same kind.
    """
    x, y, z = state
    half, sixth = 0.5 * h, h / 6.0
    for _ in range(n):
        ax, ay, az = sigma * (y - x), x * (rho - z) - y, x * y - beta * z
        x2, y2, z2 = x + half * ax, y + half * ay, z + half * az
        bx, by, bz = sigma * (y2 - x2), x2 * (rho - z2) - y2, x2 * y2 - beta * z2
        x3, y3, z3 = x + half * bx, y + half * by, z + half * bz
        cx, cy, cz = sigma * (y3 - x3), x3 * (rho - z3) - y3, x3 * y3 - beta * z3
        x4, y4, z4 = x + h * cx, y + h * cy, z + h * cz
        dx, dy, dz = sigma * (y4 - x4), x4 * (rho - z4) - y4, x4 * y4 - beta * z4
        x = x + sixth * (ax + 2.0 * bx + 2.0 * cx + dx)
        y = y + sixth * (ay + 2.0 * by + 2.0 * cy + dy)
        z = z + sixth * (az + 2.0 * bz + 2.0 * cz + dz)
    return x, y, z


def lorenz_samples(
    initial, steps: int, dt: float, substeps: int, sigma: float, rho: float, beta: float
) -> Tensor:
    """(steps, 3) float64: the states at times dt, 2·dt, …, steps·dt after ``initial``.

    Each sample interval dt is covered by ``substeps`` RK4 steps of size dt/substeps.
    """
    state = tuple(float(v) for v in initial)
    h = dt / substeps
    out = []
    for _ in range(steps):
        state = lorenz_rk4(state, sigma, rho, beta, h, substeps)
        out.append(state)
    return torch.tensor(out, dtype=torch.float64).reshape(steps, 3)


@functools.lru_cache(maxsize=32)
def reference_statistics(
    sigma: float, rho: float, beta: float, dt: float, substeps: int, burn_in: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-coordinate (mean, std) of the attractor, from fixed-seed reference trajectories.

    256 trajectories from random initial conditions (generator seed ``REFERENCE_SEED``), each
    run for ``burn_in`` time units and then sampled 250 times every dt (64 000 samples); each
    trajectory's mirror image (−x, −y, z), also a trajectory, is included, so the x and y means
    are zero (to round-off), as the attractor's symmetry demands. Cached per parameter set
    (about 0.6 s the first time).
    """
    gen = stream_generator("lorenz-reference", "A", REFERENCE_SEED)
    x0 = random_initial_state(gen, REFERENCE_TRAJECTORIES).numpy()
    h = dt / substeps
    start = (x0[:, 0], x0[:, 1], x0[:, 2])
    state = lorenz_rk4(start, sigma, rho, beta, h, burn_in_substeps(burn_in, h))
    samples = np.empty((REFERENCE_SAMPLES, 3, REFERENCE_TRAJECTORIES))
    for t in range(REFERENCE_SAMPLES):
        state = lorenz_rk4(state, sigma, rho, beta, h, substeps)
        samples[t] = state
    flat = samples.transpose(0, 2, 1).reshape(-1, 3)
    both = np.concatenate([flat, flat * np.array([-1.0, -1.0, 1.0])])
    mean = both.mean(axis=0)
    std = both.std(axis=0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def random_initial_state(gen: torch.Generator, count: int | None = None) -> Tensor:
    """Initial states (x, y, z) ~ (N(0, 10²), N(0, 10²), 25 + N(0, 10²)); (3,) or (count, 3)."""
    shape = (3,) if count is None else (count, 3)
    x0 = 10.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    x0[..., 2] += 25.0
    return x0


def burn_in_substeps(burn_in: float, h: float) -> int:
    return int(math.ceil(burn_in / h - 1e-9))


@dataclass(frozen=True)
class Lorenz(AbstractTask):
    """Input: the normalised Lorenz-63 state u_t = (s(t·dt) − μ_A)/σ_A; target: u_{t+h}.

    The system is integrated by classical RK4 with ``substeps`` steps per sample interval dt,
    from a random initial condition per stream run for ``burn_in`` time units (discarded).
    μ_A, σ_A are the per-coordinate mean and std of regime A's attractor (fixed by the task
    parameters, computed once from fixed-seed reference trajectories and cached), so regime B
    is normalised with A's statistics and its different attractor shows. Across the shift the
    trajectory continues from its state with B's parameters (the flow into sample t uses the
    regime of sample t). Optional Gaussian observation noise of std ``noise_std`` is added to
    the normalised series (input and target alike).

    ``info["clean"]`` (T, 3): the noise-free normalised target.
    """

    sigma_a: float = 10.0
    """σ in regime A."""
    rho_a: float = 28.0
    """ρ in regime A (the classical chaotic attractor)."""
    beta_a: float = 8.0 / 3.0
    """β in regime A."""
    sigma_b: float = 10.0
    """σ in regime B (unchanged by default)."""
    rho_b: float = 35.0
    """ρ in regime B: a larger, higher attractor (z mean ≈ 30.6 instead of ≈ 23.5)."""
    beta_b: float = 8.0 / 3.0
    """β in regime B (unchanged by default)."""
    dt: float = 0.05
    """Time between samples (time units of the ODE)."""
    substeps: int = 10
    """RK4 steps per sample interval (internal step dt/substeps = 0.005 by default)."""
    burn_in: float = 20.0
    """Time units integrated from the random initial condition and discarded."""
    noise_std: float = 0.0
    """Std of Gaussian observation noise on the normalised series (0 = noise-free)."""
    horizon: int = 1
    """h: the target is the state h samples ahead."""

    name = "lorenz"
    continuous_error = True

    def __post_init__(self):
        for what in ("sigma_a", "rho_a", "beta_a", "sigma_b", "rho_b", "beta_b", "dt"):
            set_field(self, what, check_float(getattr(self, what), what, positive=True))
        set_field(self, "burn_in", check_float(self.burn_in, "burn_in", low=0.0))
        set_field(self, "noise_std", check_float(self.noise_std, "noise_std", low=0.0))
        set_field(self, "substeps", check_count(self.substeps, "substeps", minimum=1))
        set_field(self, "horizon", check_count(self.horizon, "horizon", minimum=1))

    @property
    def input_size(self) -> int:
        return 3

    @property
    def output_size(self) -> int:
        return 3

    def parameters(self, regime: str) -> tuple[float, float, float]:
        """(σ, ρ, β) of a regime."""
        if regime == "A":
            return self.sigma_a, self.rho_a, self.beta_a
        return self.sigma_b, self.rho_b, self.beta_b

    def normalisation(self) -> tuple[Tensor, Tensor]:
        """(μ_A, σ_A), each (3,) float64: regime A's attractor mean and std per coordinate."""
        mean, std = reference_statistics(
            *self.parameters("A"), self.dt, self.substeps, self.burn_in
        )
        return torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)

    def describe_shift(self) -> str:
        changes = []
        for sym, a, b in zip(("σ", "ρ", "β"), self.parameters("A"), self.parameters("B")):
            changes.append(f"{sym} {fmt(a)} → {fmt(b)}" if a != b else f"{sym} {fmt(a)}")
        return (
            f"Lorenz-63 {', '.join(changes)}; sampled every dt={fmt(self.dt)}, "
            f"{self.horizon}-step-ahead, normalised by regime A's statistics"
        )

    def _generate(self, segments: Segments, gen: torch.Generator) -> Stream:
        T = sum(n for _, n in segments)
        h = self.horizon
        initial = random_initial_state(gen)
        noise = torch.randn(T + h, 3, generator=gen, dtype=torch.float64)
        first = self.parameters(segments[0][0])
        step = self.dt / self.substeps
        state = lorenz_rk4(
            tuple(float(v) for v in initial), *first, step, burn_in_substeps(self.burn_in, step)
        )
        pieces = []
        last = len(segments) - 1
        for j, (regime, steps) in enumerate(segments):
            n = steps + (h if j == last else 0)
            piece = lorenz_samples(state, n, self.dt, self.substeps, *self.parameters(regime))
            pieces.append(piece)
            state = tuple(float(v) for v in piece[steps - 1])
        raw = torch.cat(pieces)
        mean, std = self.normalisation()
        clean = (raw - mean) / std
        observed = clean + self.noise_std * noise
        return continuous_stream(observed[:T], observed[h:], segments, clean=clean[h:])
