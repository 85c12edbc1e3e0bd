"""Prediction of a noisy sine mixture; the shift changes the frequencies."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigurationError
from .base import (
    AbstractTask,
    Segments,
    Stream,
    check_count,
    check_float,
    check_floats,
    continuous_stream,
    fmt,
    set_field,
)

Tensor = torch.Tensor


@dataclass(frozen=True)
class Sine(AbstractTask):
    """y_t = Σ_i a_i·sin(φ_i + 2π f_i t) + σ ε_t; input y_t, target y_{t+h}.

    Component i has frequency f_i (cycles per step) and amplitude a_i: regime A uses
    ``frequencies_a``/``amplitudes_a``, regime B ``frequencies_b``/``amplitudes_b``. Phases φ_i
    are drawn uniformly in [0, 2π) per stream; ε_t is standard normal observation noise, the
    same in input and target (the target is the future observation, so the best achievable
    MSE is about σ²). Across the shift (``sample_shift``) each component keeps its phase and
    changes its frequency and amplitude, so the signal has no jump.

    ``info["clean"]`` (T, 1): the noise-free target Σ_i a_i sin(φ_i(t + h)).
    """

    frequencies_a: tuple[float, ...] = (1 / 50, 1 / 23, 1 / 11)
    """Regime A frequencies in cycles per step (periods 50, 23, 11 steps)."""
    frequencies_b: tuple[float, ...] = (1 / 36, 1 / 16, 1 / 8)
    """Regime B frequencies (periods 36, 16, 8 steps): each component about 1.4× faster."""
    amplitudes_a: tuple[float, ...] = (1.0, 0.6, 0.3)
    """Regime A amplitudes, one per component."""
    amplitudes_b: tuple[float, ...] = (1.0, 0.6, 0.3)
    """Regime B amplitudes (unchanged by default: only the frequencies shift)."""
    noise_std: float = 0.1
    """σ, the standard deviation of the Gaussian observation noise."""
    horizon: int = 1
    """h: the target is the observation h steps ahead (1 = one-step-ahead prediction)."""

    name = "sine"
    continuous_error = True

    def __post_init__(self):
        n = len(check_floats(self.frequencies_a, "frequencies_a"))
        for what in ("frequencies_a", "frequencies_b"):
            values = check_floats(getattr(self, what), what, length=n, positive=True)
            if max(values) >= 0.5:
                raise ConfigurationError(
                    f"{what} must lie below 0.5 cycles per step (the Nyquist limit), got {values}"
                )
            set_field(self, what, values)
        for what in ("amplitudes_a", "amplitudes_b"):
            set_field(self, what, check_floats(getattr(self, what), what, length=n, low=0.0))
        set_field(self, "noise_std", check_float(self.noise_std, "noise_std", low=0.0))
        set_field(self, "horizon", check_count(self.horizon, "horizon", minimum=1))

    @property
    def input_size(self) -> int:
        return 1

    @property
    def output_size(self) -> int:
        return 1

    @property
    def components(self) -> int:
        return len(self.frequencies_a)

    def describe_shift(self) -> str:
        def periods(fs):
            return ", ".join(fmt(1 / f) for f in fs)

        amps = (
            f"amplitudes {', '.join(fmt(a) for a in self.amplitudes_a)} unchanged"
            if self.amplitudes_a == self.amplitudes_b
            else f"amplitudes {', '.join(fmt(a) for a in self.amplitudes_a)} → "
            f"{', '.join(fmt(a) for a in self.amplitudes_b)}"
        )
        return (
            f"sine mixture periods {periods(self.frequencies_a)} → {periods(self.frequencies_b)} "
            f"steps; {amps}; noise std {fmt(self.noise_std)}; {self.horizon}-step-ahead"
        )

    def _parameters(self, regime: str) -> tuple[Tensor, Tensor]:
        f, a = (
            (self.frequencies_a, self.amplitudes_a)
            if regime == "A"
            else (self.frequencies_b, self.amplitudes_b)
        )
        return torch.tensor(f, dtype=torch.float64), torch.tensor(a, dtype=torch.float64)

    def clean_signal(self, segments: Segments, phases: Tensor, extra: int = 0) -> Tensor:
        """Σ_i a_i sin(φ_i(t)) for t = 0 … T + extra − 1 (T = total steps of ``segments``).

        Within a segment starting at t_s with phases Φ_s, φ_i(t) = Φ_s,i + 2π f_i (t − t_s);
        the next segment starts with the phases this one reaches. The ``extra`` steps beyond
        the last segment continue it.
        """
        pieces = []
        phase = phases.to(torch.float64)
        last = len(segments) - 1
        for j, (regime, steps) in enumerate(segments):
            f, a = self._parameters(regime)
            n = steps + (extra if j == last else 0)
            t = torch.arange(n, dtype=torch.float64).unsqueeze(1)
            pieces.append((a * torch.sin(phase + 2 * math.pi * f * t)).sum(dim=1))
            phase = torch.remainder(phase + 2 * math.pi * f * steps, 2 * math.pi)
        return torch.cat(pieces)

    def _generate(self, segments: Segments, gen: torch.Generator) -> Stream:
        T = sum(n for _, n in segments)
        h = self.horizon
        phases = 2 * math.pi * torch.rand(self.components, generator=gen, dtype=torch.float64)
        noise = torch.randn(T + h, generator=gen, dtype=torch.float64)
        clean = self.clean_signal(segments, phases, extra=h)
        observed = clean + self.noise_std * noise
        return continuous_stream(
            observed[:T].unsqueeze(1),
            observed[h:].unsqueeze(1),
            segments,
            clean=clean[h:].unsqueeze(1),
        )
