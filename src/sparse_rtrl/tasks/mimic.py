"""The "mimic" task of Marschall, Cho & Savin (JMLR 2020): imitate a fixed teacher RNN."""

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
    continuous_stream,
    fmt,
    set_field,
    stream_generator,
)

Tensor = torch.Tensor


@dataclass(frozen=True)
class Mimic(AbstractTask):
    """x_t ∈ {0, 1}^I i.i.d. Bernoulli(p); target y_t = W_out r_t of a teacher RNN,

        r_t = tanh(W_in x_t + W_rec r_{t−1}),   r_{−1} = 0.

    The teacher is fixed by ``teacher_seed`` (the same for every stream seed): W_in has
    N(0, 1) entries, W_rec = g·G/√n and W_out = G'/√n with standard normal G, G'. In regime B
    the teacher's recurrent weights change to W_rec + δ·g·G''/√n (δ = ``perturbation``),
    inputs and readout unchanged, so a student has to relearn the teacher's dynamics. Across
    the shift the teacher's state carries on. With the default g = 0.9 the teacher forgets
    its initial state, so the target is a function of the recent inputs.

    ``info`` holds only ``"regime"``.
    """

    n_inputs: int = 4
    """I, the input bits per step."""
    n_outputs: int = 1
    """Outputs of the teacher's linear readout."""
    teacher_hidden: int = 16
    """n, the teacher's hidden units."""
    teacher_gain: float = 0.9
    """g, the scale of the teacher's recurrent weights."""
    perturbation: float = 0.5
    """δ, the relative size of the change of W_rec in regime B."""
    input_probability: float = 0.5
    """p, the probability of each input bit being 1."""
    teacher_seed: int = 0
    """Seed of the teacher's weights (fixed per task, not per stream)."""

    name = "mimic"
    continuous_error = True

    def __post_init__(self):
        for what in ("n_inputs", "n_outputs", "teacher_hidden"):
            set_field(self, what, check_count(getattr(self, what), what, minimum=1))
        set_field(self, "teacher_seed", check_count(self.teacher_seed, "teacher_seed", minimum=0))
        set_field(self, "teacher_gain", check_float(self.teacher_gain, "teacher_gain", low=0.0))
        set_field(self, "perturbation", check_float(self.perturbation, "perturbation", low=0.0))
        p = check_float(self.input_probability, "input_probability", low=0.0)
        if p > 1.0:
            raise ConfigurationError(f"input_probability must lie in [0, 1], got {p}")
        set_field(self, "input_probability", p)

    @property
    def input_size(self) -> int:
        return self.n_inputs

    @property
    def output_size(self) -> int:
        return self.n_outputs

    def teacher(self, regime: str) -> dict[str, Tensor]:
        """The teacher's weights in a regime: ``w_in`` (n, I), ``w_rec`` (n, n), ``w_out``
        (O, n)."""
        n, g = self.teacher_hidden, self.teacher_gain
        gen = stream_generator("mimic-teacher", "weights", self.teacher_seed)
        w_in = torch.randn(n, self.n_inputs, generator=gen, dtype=torch.float64)
        w_rec = g * torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
        w_out = torch.randn(self.n_outputs, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
        delta = g * torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
        if regime == "B":
            w_rec = w_rec + self.perturbation * delta
        return {"w_in": w_in, "w_rec": w_rec, "w_out": w_out}

    def describe_shift(self) -> str:
        return (
            f"mimic a teacher RNN (n={self.teacher_hidden}, gain {fmt(self.teacher_gain)}, "
            f"{self.n_inputs} Bernoulli({fmt(self.input_probability)}) inputs): its recurrent "
            f"weights change by a relative {fmt(self.perturbation)}"
        )

    def _generate(self, segments: Segments, gen: torch.Generator) -> Stream:
        T = sum(n for _, n in segments)
        x = (torch.rand(T, self.n_inputs, generator=gen, dtype=torch.float64)
             < self.input_probability).to(torch.float64)
        r = torch.zeros(self.teacher_hidden, dtype=torch.float64)
        outputs = []
        t = 0
        for regime, steps in segments:
            w = self.teacher(regime)
            drive = x[t : t + steps] @ w["w_in"].T
            for s in range(steps):
                r = torch.tanh(drive[s] + w["w_rec"] @ r)
                outputs.append(w["w_out"] @ r)
            t += steps
        return continuous_stream(x, torch.stack(outputs), segments)
