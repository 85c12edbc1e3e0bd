"""The adding problem (Hochreiter & Schmidhuber 1997): an error only at the end of a sequence."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigurationError
from .base import (
    AbstractTask,
    Segments,
    Stream,
    check_count,
    check_floats,
    fmt,
    regime_codes,
    set_field,
)

Tensor = torch.Tensor


@dataclass(frozen=True)
class Adding(AbstractTask):
    """Sequences of L steps; input (v_t, m_t); one target at the last step: w₁·v_p + w₂·v_q.

    Each sequence has values v_t ~ U[lo, hi) and exactly two markers m_p = m_q = 1: p uniform
    in the first half [0, ⌊L/2⌋), q uniform in the second half [⌊L/2⌋, L). The answer
    w₁·v_p + w₂·v_q is the target of the sequence's last step, the only step with an error
    (``error_mask``); ``starts`` marks each sequence's first step, where the state is reset.
    Targets of the other steps are 0 and unused. A stream whose length is not a multiple of
    L ends with a cut sequence that has no error step. Across the shift (``sample_shift``) the
    B part begins a new sequence.

    The default shift changes the operation from the sum v_p + v_q to the difference
    v_p − v_q: the network must now tell the first marked value from the second, which the
    readout alone cannot do when the state holds only their sum. This is the scope condition
    of claim C10 (no continuous error signal).

    ``info["answer"]`` (T,): the sequence's answer at every step of a complete sequence
    (NaN on a cut last sequence), for plots.
    """

    length: int = 20
    """L, the steps of each sequence (≥ 2)."""
    weights_a: tuple[float, float] = (1.0, 1.0)
    """(w₁, w₂) in regime A: the classical adding problem v_p + v_q."""
    weights_b: tuple[float, float] = (1.0, -1.0)
    """(w₁, w₂) in regime B: the difference v_p − v_q."""
    values_a: tuple[float, float] = (0.0, 1.0)
    """[lo, hi) of the uniform values in regime A."""
    values_b: tuple[float, float] = (0.0, 1.0)
    """[lo, hi) of the uniform values in regime B (unchanged by default)."""

    name = "adding"
    continuous_error = False

    def __post_init__(self):
        set_field(self, "length", check_count(self.length, "length", minimum=2))
        for what in ("weights_a", "weights_b", "values_a", "values_b"):
            set_field(self, what, check_floats(getattr(self, what), what, length=2))
        for what in ("values_a", "values_b"):
            lo, hi = getattr(self, what)
            if not lo < hi:
                raise ConfigurationError(f"{what} must be (lo, hi) with lo < hi, got {(lo, hi)}")

    @property
    def input_size(self) -> int:
        return 2

    @property
    def output_size(self) -> int:
        return 1

    def parameters(self, regime: str) -> tuple[tuple[float, float], tuple[float, float]]:
        """(weights, values range) of a regime."""
        if regime == "A":
            return self.weights_a, self.values_a
        return self.weights_b, self.values_b

    def describe_shift(self) -> str:
        def op(w):
            sign = "+" if w[1] >= 0 else "−"
            return f"{fmt(w[0])}·v_first {sign} {fmt(abs(w[1]))}·v_second"

        vals = (
            f"values U[{fmt(self.values_a[0])}, {fmt(self.values_a[1])}) unchanged"
            if self.values_a == self.values_b
            else f"values U[{fmt(self.values_a[0])}, {fmt(self.values_a[1])}) → "
            f"U[{fmt(self.values_b[0])}, {fmt(self.values_b[1])})"
        )
        return (
            f"adding problem, L={self.length}, error only at each sequence's end: target "
            f"{op(self.weights_a)} → {op(self.weights_b)}; {vals}"
        )

    def _segment(self, regime: str, steps: int, gen: torch.Generator):
        L = self.length
        n = -(-steps // L)  # sequences, the last possibly cut
        (w1, w2), (lo, hi) = self.parameters(regime)
        values = lo + (hi - lo) * torch.rand(n, L, generator=gen, dtype=torch.float64)
        first = torch.randint(0, L // 2, (n,), generator=gen)
        second = torch.randint(L // 2, L, (n,), generator=gen)
        markers = torch.zeros(n, L, dtype=torch.float64)
        rows = torch.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        answer = w1 * values[rows, first] + w2 * values[rows, second]
        inputs = torch.stack([values, markers], dim=-1).reshape(n * L, 2)[:steps]
        error = torch.zeros(n, L, dtype=torch.bool)
        error[:, -1] = True
        error = error.reshape(-1)[:steps]
        starts = torch.zeros(n, L, dtype=torch.bool)
        starts[:, 0] = True
        starts = starts.reshape(-1)[:steps]
        answers = answer.unsqueeze(1).expand(n, L).reshape(-1)[:steps].clone()
        if steps % L:
            answers[-(steps % L):] = float("nan")
        targets = torch.where(error, answers, torch.zeros_like(answers)).unsqueeze(1)
        return inputs, targets, error, starts, answers

    def _generate(self, segments: Segments, gen: torch.Generator) -> Stream:
        parts = [self._segment(regime, steps, gen) for regime, steps in segments]
        inputs, targets, error, starts, answers = (torch.cat(p) for p in zip(*parts))
        return Stream(
            inputs=inputs,
            targets=targets,
            error_mask=error,
            starts=starts,
            info={"regime": regime_codes(segments), "answer": answers},
        )
