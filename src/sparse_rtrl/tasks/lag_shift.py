"""A shift that needs new temporal credit: after it the target also depends on an input d steps
back, of a channel that regime A never needed (the transport-dependent regime, SPEC §4b)."""

from __future__ import annotations

from dataclasses import dataclass

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
)

Tensor = torch.Tensor


@dataclass(frozen=True)
class LagShift(AbstractTask):
    """x_t = (a_t, b_t), i.i.d. ±1 (Rademacher) in both regimes;

        regime A:  y_t = w·a_{t−m}                        (+ σ ε_t)
        regime B:  y_t = w·a_{t−m} + c·b_{t−d}            (+ σ ε_t)

    The channel b is present all along but irrelevant in A: a network trained on A has no
    reason to remember it. The new term z_t = c·b_{t−d} has mean 0 and variance c², and is
    independent of A's target and of every input after step t − d. So a model frozen at the
    shift keeps A's loss and pays exactly c² more (it stays calibrated: no bias or scale
    error that a readout could fix); a readout of the state (h_t, x_t) can gain only the part
    of z_t's variance the state still holds about b_{t−d}, ≈ 0 once d exceeds the state's
    fading memory of b; the immediate rule's gradient sees only (x_t, h_{t−1}), so its
    expected update on the new term is ≈ 0 once d − 1 exceeds that memory. Only a rule that
    carries credit back d steps can learn z_t. docs/tasks.md gives the argument and the
    measured memory (a pretrained n = 16 vanilla state explains 9 % of b_{t−5}, < 1 % of
    b_{t−8}).

    The stream is a window of an endless input sequence: the first d (or m) targets use
    inputs drawn before the window. ``sample_shift`` keeps the input sequence across the
    shift; only the target changes, at the first B step. Lag 1 is allowed as a control
    (there the immediate rule sees b_{t−1} through h_{t−1} and can learn the term).

    ``info``: ``"base"`` (T, 1) A's part w·a_{t−m} (+ noise), ``"new_term"`` (T, 1)
    c·b_{t−d} on B steps and 0 on A steps.
    """

    lag: int = 8
    """d, how far back the new term reaches (≥ 1; d = 1 is a control the immediate rule can
    learn, and d must exceed the state's memory of b for it to fail)."""
    scale: float = 1.0
    """c, the new term's weight: the frozen model's loss grows by c² at the shift."""
    memory_a: int = 1
    """m, the lag of A's target (0: the current input, no memory needed)."""
    weight_a: float = 1.0
    """w, the weight of A's term (the same in both regimes)."""
    noise_std: float = 0.0
    """σ, Gaussian noise added to the target (the irreducible loss is σ²)."""

    name = "lag_shift"
    continuous_error = True

    def __post_init__(self):
        set_field(self, "lag", check_count(self.lag, "lag", minimum=1))
        set_field(self, "memory_a", check_count(self.memory_a, "memory_a", minimum=0))
        set_field(self, "scale", check_float(self.scale, "scale", positive=True))
        set_field(self, "weight_a", check_float(self.weight_a, "weight_a"))
        set_field(self, "noise_std", check_float(self.noise_std, "noise_std", low=0.0))

    @property
    def input_size(self) -> int:
        return 2

    @property
    def output_size(self) -> int:
        return 1

    def new_term_variance(self) -> float:
        """c²·Var(b) = c²: the frozen model's extra loss after the shift, in closed form."""
        return self.scale**2

    def describe_shift(self) -> str:
        return (
            f"target w·a[t−{self.memory_a}] → w·a[t−{self.memory_a}] + c·b[t−{self.lag}] "
            f"(w {fmt(self.weight_a)}, c {fmt(self.scale)}, ±1 inputs, noise std "
            f"{fmt(self.noise_std)}): a new term d = {self.lag} steps back on a channel A never needed"
        )

    def history(self) -> int:
        """Inputs drawn before the window, so that every target of the window is defined."""
        return max(self.lag, self.memory_a)

    def new_term(self, b: Tensor) -> Tensor:
        """z_t = c·b_{t−d} for the window's T steps, from channel b over ``history()`` + T
        steps (b[history() + t] is fed at step t)."""
        pad, T = self.history(), b.shape[0] - self.history()
        return self.scale * b[pad - self.lag : pad - self.lag + T]

    def _generate(self, segments: Segments, gen: torch.Generator) -> Stream:
        T = sum(n for _, n in segments)
        pad = self.history()
        # the inputs of steps −pad … T−1; x[pad + t] is the input fed at step t
        x = 2.0 * torch.randint(0, 2, (pad + T, 2), generator=gen).to(torch.float64) - 1.0
        noise = torch.randn(T, generator=gen, dtype=torch.float64)
        m = self.memory_a
        base = self.weight_a * x[pad - m : pad - m + T, 0] + self.noise_std * noise
        in_b = torch.cat([torch.full((n,), r == "B") for r, n in segments])
        zero = torch.zeros(T, dtype=torch.float64)
        new = torch.where(in_b, self.new_term(x[:, 1]), zero) if bool(in_b.any()) else zero
        return continuous_stream(
            x[pad:], (base + new).unsqueeze(1), segments,
            base=base.unsqueeze(1), new_term=new.unsqueeze(1),
        )
