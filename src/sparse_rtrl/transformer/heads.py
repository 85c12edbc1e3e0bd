"""Choosing the heads that carry gradient to the past (the transformer analogue of K_t).

A fraction f of heads keeps, in every block, m = ⌊f·H + ½⌋ of its H heads (round half up;
with H = 12, f = 1, 1/2, 1/3, 1/4, 0 give m = 12, 6, 4, 3, 0 exactly). Which m:

- ``"random"``: a fresh uniform m-subset per block at every step;
- ``"fixed"``: one uniform m-subset per block, drawn once when the learner is built;
- ``"importance"``: the m heads with the largest score at this step;
- ``"adversarial"``: the m heads with the smallest score at this step.

Scores (``importance_score``) are ``"gradient"``: the head's contribution c_{l,h} to the dense
gradient (see :func:`~sparse_rtrl.transformer.diagnostics.head_contributions`), or
``"attention"``: the attention mass the newest query of head h puts on past positions,
1 − a_{L,L}, averaged over the batch (with B streams one mask serves them all, and the
gradient score is that of the summed loss). Randomness comes from one seeded ``torch.Generator``
(uniform noise drawn in float32 whatever the model's dtype), so a run is reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ConfigurationError

Tensor = torch.Tensor

SELECTIONS = ("random", "fixed", "importance", "adversarial")
IMPORTANCE_SCORES = ("gradient", "attention")


def check_fraction(fraction: float) -> float:
    """``fraction`` as a float in [0, 1], or a :class:`ConfigurationError` saying so."""
    ok = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not ok or not 0.0 <= float(fraction) <= 1.0 or math.isnan(float(fraction)):
        raise ConfigurationError(
            f"head_fraction must be a number in [0, 1] (1 = every head, the dense reference; "
            f"0 = none), got {fraction!r}"
        )
    return float(fraction)


def heads_kept(fraction: float, heads: int) -> int:
    """m = ⌊fraction·heads + ½⌋: the heads per block that carry gradient to the past."""
    return int(math.floor(check_fraction(fraction) * heads + 0.5))


def top_heads(scores: Tensor, m: int) -> Tensor:
    """(blocks, H) bool mask of the m largest scores in each block (row)."""
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if m == 0:
        return mask
    return mask.scatter_(-1, scores.topk(m, dim=-1).indices, True)


class HeadSelection:
    """Which heads carry gradient to the past, step by step.

    Args:
        fraction: the share of heads per block, in [0, 1]; m = :func:`heads_kept`.
        selection: one of :data:`SELECTIONS`.
        blocks, heads: the model's shape.
        seed: seeds the generator of "random" and "fixed".
        importance_score: one of :data:`IMPORTANCE_SCORES` (used by "importance" and
            "adversarial").
    """

    def __init__(
        self,
        fraction: float,
        selection: str,
        blocks: int,
        heads: int,
        seed: int = 0,
        importance_score: str = "gradient",
    ):
        if selection not in SELECTIONS:
            raise ConfigurationError(
                f"unknown head selection {selection!r}: use one of {', '.join(map(repr, SELECTIONS))}"
            )
        if importance_score not in IMPORTANCE_SCORES:
            raise ConfigurationError(
                f"unknown importance_score {importance_score!r}: use one of "
                f"{', '.join(map(repr, IMPORTANCE_SCORES))}"
            )
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigurationError(f"seed must be an int, got {seed!r}")
        self.fraction = check_fraction(fraction)
        self.selection = selection
        self.importance_score = importance_score
        self.blocks, self.heads = blocks, heads
        self.kept = heads_kept(fraction, heads)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.fixed: Tensor | None = None
        if selection == "fixed":
            self.fixed = self._random()

    @property
    def trivial(self) -> bool:
        """True when the mask is all heads or none (no choice to make)."""
        return self.kept in (0, self.heads)

    @property
    def needs(self) -> str | None:
        """The score this step's choice needs: "gradient", "attention" or None."""
        if self.trivial or self.selection not in ("importance", "adversarial"):
            return None
        return self.importance_score

    def _random(self) -> Tensor:
        noise = torch.rand((self.blocks, self.heads), generator=self.generator)
        return top_heads(noise, self.kept)

    def choose(self, scores: Tensor | None = None) -> Tensor:
        """This step's mask (blocks, H) bool; ``scores`` (blocks, H) when :attr:`needs`."""
        if self.kept == self.heads:
            return torch.ones(self.blocks, self.heads, dtype=torch.bool)
        if self.kept == 0:
            return torch.zeros(self.blocks, self.heads, dtype=torch.bool)
        if self.selection == "random":
            return self._random()
        if self.selection == "fixed":
            return self.fixed.clone()
        if scores is None or scores.shape != (self.blocks, self.heads):
            raise ConfigurationError(f"{self.selection!r} selection needs scores of shape (blocks, heads)")
        scores = scores.detach().cpu().to(torch.float64)
        return top_heads(scores if self.selection == "importance" else -scores, self.kept)

    def state_dict(self) -> dict[str, Any]:
        return {
            "selection": self.selection,
            "generator": self.generator.get_state(),
            "fixed": None if self.fixed is None else self.fixed.clone(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d["selection"] != self.selection:
            raise ConfigurationError(
                f"this state was saved with selection {d['selection']!r}; load it into a learner "
                f"built with the same selection (this one uses {self.selection!r})"
            )
        self.generator.set_state(d["generator"])
        if d["fixed"] is not None:
            if d["fixed"].shape != (self.blocks, self.heads):
                raise ConfigurationError(
                    f"the saved fixed head mask has shape {tuple(d['fixed'].shape)}, expected "
                    f"{(self.blocks, self.heads)}: load it into a model of the same blocks and heads"
                )
            self.fixed = d["fixed"].clone()

    def __repr__(self) -> str:
        score = f", importance_score={self.importance_score!r}" if self.selection in ("importance", "adversarial") else ""
        return f"HeadSelection(fraction={self.fraction:g}, kept={self.kept}/{self.heads}, selection={self.selection!r}{score})"
