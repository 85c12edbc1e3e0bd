"""The "add" task of Marschall, Cho & Savin (JMLR 2020): a bit stream with lagged dependencies."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigurationError
from .base import AbstractTask, Segments, Stream, check_pair, continuous_stream, set_field

Tensor = torch.Tensor


@dataclass(frozen=True)
class MarschallAdd(AbstractTask):
    """x_t ~ Bernoulli(½) i.i.d.; y_t ~ Bernoulli(p_t), p_t = ½ + ½·x_{t−t₁} − ¼·x_{t−t₂}.

    Input (x_t, 1 − x_t); target (y_t, 1 − y_t) — or (p_t, 1 − p_t) with ``deterministic`` —
    at every step; the output is two logits and the loss is the softmax cross-entropy with the
    target distribution. Predicting p_t needs memory of the bits t₁ and t₂ steps back; a model
    with no memory scores the entropy of the marginal, one that remembers only x_{t−t₁} does
    better, and one that remembers both reaches the conditional entropy H(y | x_{t−t₁},
    x_{t−t₂}). The stream is a window of an endless bit stream: its first targets depend on
    bits from before the window (not shown). Across the shift the bit stream continues and
    the lags (t₁, t₂) change from ``lags_a`` to ``lags_b``.

    ``info["probability"]`` (T,): p_t.
    """

    lags_a: tuple[int, int] = (5, 9)
    """(t₁, t₂) in regime A."""
    lags_b: tuple[int, int] = (7, 13)
    """(t₁, t₂) in regime B: both dependencies reach further back."""
    deterministic: bool = False
    """True: the target is (p_t, 1 − p_t) itself; False: a Bernoulli(p_t) outcome (one-hot)."""

    name = "marschall_add"
    continuous_error = True

    def __post_init__(self):
        for what in ("lags_a", "lags_b"):
            lags = getattr(self, what)
            try:
                lags = tuple(lags)
                ok = len(lags) == 2 and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in lags
                )
            except TypeError:
                ok = False
            if not ok:
                raise ConfigurationError(
                    f"{what} must be two ints ≥ 1 (t₁, t₂), the lags of the dependencies, got "
                    f"{getattr(self, what)!r}"
                )
            set_field(self, what, lags)
        if not isinstance(self.deterministic, bool):
            raise ConfigurationError(
                f"deterministic must be True or False, got {self.deterministic!r}"
            )

    @property
    def input_size(self) -> int:
        return 2

    @property
    def output_size(self) -> int:
        return 2

    def lags(self, regime: str) -> tuple[int, int]:
        return self.lags_a if regime == "A" else self.lags_b

    def describe_shift(self) -> str:
        kind = "probabilities" if self.deterministic else "Bernoulli outcomes"
        return (
            f"Marschall add task, p_t = 1/2 + 1/2·x[t−t1] − 1/4·x[t−t2] ({kind}): lags (t1, t2) "
            f"{self.lags_a} → {self.lags_b}"
        )

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy −Σ_c target_c·log softmax(prediction)_c (a batch ``(B, 2)`` gives the
        mean over its B streams)."""
        check_pair(prediction, target)
        per_stream = -(target * F.log_softmax(prediction, dim=-1)).sum(dim=-1)
        return per_stream.mean()

    def _generate(self, segments: Segments, gen: torch.Generator) -> Stream:
        T = sum(n for _, n in segments)
        pad = max(max(self.lags(r)) for r, _ in segments)
        bits = torch.randint(0, 2, (T,), generator=gen).to(torch.float64)
        history = torch.randint(0, 2, (pad,), generator=gen).to(torch.float64)
        draws = torch.rand(T, generator=gen, dtype=torch.float64)
        padded = torch.cat([history, bits])  # padded[pad + t] = x_t
        probability = []
        start = 0
        for regime, steps in segments:
            t = torch.arange(start, start + steps)
            t1, t2 = self.lags(regime)
            probability.append(0.5 + 0.5 * padded[pad + t - t1] - 0.25 * padded[pad + t - t2])
            start += steps
        p = torch.cat(probability)
        y = p if self.deterministic else (draws < p).to(torch.float64)
        return continuous_stream(
            torch.stack([bits, 1.0 - bits], dim=1),
            torch.stack([y, 1.0 - y], dim=1),
            segments,
            probability=p,
        )
