"""A second transport-dependent shift: the new term is a teacher RNN's output, d steps late."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from .base import check_count, check_float, fmt, set_field, stream_generator
from .lag_shift import LagShift

Tensor = torch.Tensor

#: steps the teacher runs before a window, so its state is stationary at the window's start
TEACHER_BURN_IN = 100
#: length of the reference run that fixes the teacher's output scale
REFERENCE_STEPS = 50_000


@dataclass(frozen=True)
class DelayedTeacher(LagShift):
    """x_t = (a_t, b_t), i.i.d. ±1; A's target as in ``lag_shift``; regime B adds

        z_t = c · q_{t−d} / s,   q_t = v·r_t,   r_t = tanh(u·b_t + W r_{t−1})

    the output of a random teacher RNN driven by the channel b, delayed by d steps. The
    teacher (n units; u ~ κ·N(0, 1)ⁿ, W = g·Q with Q a random orthogonal matrix, v ~
    N(0, 1)ⁿ/√n projected orthogonal to u so that q has no instantaneous path and spreads
    over past inputs) is fixed by ``teacher_seed``; s is the std of q on a reference run of
    50 000 steps (fixed seed), so Var(z) = c². ‖W‖₂ = g < 1 and tanh is 1-Lipschitz, so the
    teacher is a contraction: it forgets its initial state, has one stationary law, and —
    being odd (no biases) with symmetric inputs — E[z] = 0 exactly (a random W of norm > 1
    can be bistable, and each stream would then carry a mean a readout could learn); z depends only on b_{≤ t−d}, so it is independent of A's target and of every
    input after step t − d. Unlike ``lag_shift``'s single input, z is a nonlinear function
    of a window of b that starts d steps back and fades at the teacher's rate g: a student
    must learn the teacher's dynamics and the delay, through d steps of credit.

    ``info``: ``"base"`` and ``"new_term"`` as in ``lag_shift``.
    """

    lag: int = 5
    """d, the delay of the teacher's output (≥ 1; as in ``lag_shift``)."""
    teacher_hidden: int = 8
    """n, the teacher's units."""
    teacher_gain: float = 0.9
    """g, the scale of the teacher's recurrent weights (its memory fades about as g^k)."""
    teacher_input_gain: float = 0.5
    """κ, the scale of the teacher's input weights (larger: more saturated, less linear)."""
    teacher_seed: int = 0
    """Seed of the teacher's weights (fixed per task, shared by every stream seed)."""

    name = "delayed_teacher"

    def __post_init__(self):
        super().__post_init__()
        set_field(self, "teacher_hidden", check_count(self.teacher_hidden, "teacher_hidden", minimum=1))
        set_field(self, "teacher_gain", check_float(self.teacher_gain, "teacher_gain", low=0.0))
        set_field(self, "teacher_input_gain", check_float(self.teacher_input_gain, "teacher_input_gain", positive=True))
        set_field(self, "teacher_seed", check_count(self.teacher_seed, "teacher_seed", minimum=0))

    def teacher(self) -> dict[str, Tensor | float]:
        """The teacher's weights ``u`` (n,), ``w`` (n, n), ``v`` (n,) and its output scale s."""
        u, w, v, scale = _teacher(self.teacher_hidden, self.teacher_gain, self.teacher_input_gain, self.teacher_seed)
        return {"u": u.clone(), "w": w.clone(), "v": v.clone(), "scale": scale}

    def describe_shift(self) -> str:
        return (
            f"target w·a[t−{self.memory_a}] → w·a[t−{self.memory_a}] + c·q[t−{self.lag}], q the "
            f"output of a teacher RNN (n={self.teacher_hidden}, gain {fmt(self.teacher_gain)}) "
            f"driven by a channel b that A never needed (c {fmt(self.scale)}, ±1 inputs): d = "
            f"{self.lag} steps of new credit"
        )

    def history(self) -> int:
        return max(self.lag + TEACHER_BURN_IN, self.memory_a)

    def new_term(self, b: Tensor) -> Tensor:
        t = self.teacher()
        q = teacher_outputs(t["u"], t["w"], t["v"], b) / t["scale"]
        pad, T = self.history(), b.shape[0] - self.history()
        return self.scale * q[pad - self.lag : pad - self.lag + T]


def teacher_outputs(u: Tensor, w: Tensor, v: Tensor, b: Tensor) -> Tensor:
    """q_t = v·r_t with r_t = tanh(u·b_t + W r_{t−1}), r_{−1} = 0, for every step of b."""
    r = torch.zeros_like(u)
    drive = b.unsqueeze(1) * u  # (T, n)
    out = torch.empty(b.shape[0], dtype=torch.float64)
    for t in range(b.shape[0]):
        r = torch.tanh(drive[t] + w @ r)
        out[t] = v @ r
    return out


@functools.lru_cache(maxsize=16)
def _teacher(n: int, gain: float, input_gain: float, seed: int) -> tuple[Tensor, Tensor, Tensor, float]:
    """(u, W, v, s) of a teacher; s, the std of q on the reference run, costs ≈ 1 s once."""
    gen = stream_generator("delayed-teacher", "weights", seed)
    u = input_gain * torch.randn(n, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    w = gain * q * torch.sign(torch.diagonal(r))  # g × a uniformly random orthogonal matrix
    v = torch.randn(n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    v = v - (v @ u) / (u @ u) * u  # v ⟂ u: no instantaneous path, q spreads over past inputs
    ref = stream_generator("delayed-teacher", "reference", seed)
    b = 2.0 * torch.randint(0, 2, (REFERENCE_STEPS + TEACHER_BURN_IN,), generator=ref).to(torch.float64) - 1.0
    return u, w, v, float(teacher_outputs(u, w, v, b)[TEACHER_BURN_IN:].std())
