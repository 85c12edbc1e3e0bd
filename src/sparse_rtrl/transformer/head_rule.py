"""The head-sparse transport rule as an object, in the vocabulary of ``sparse``:

    K over heads: in every block, m = ⌊f·H + ½⌋ of the H heads carry gradient to the past
    (their past keys/values stay attached); the others' are detached.

``HeadSparse(fraction, selection, resample_every, score, seed)`` names its options as
:class:`~sparse_rtrl.transport.Sparse` does: ``selection`` "random" (uniform, without
replacement), "magnitude" (the m largest scores) or "adversarial" (the m smallest);
``resample_every`` 1 (a fresh random choice every step) or 0 (drawn once, fixed for the run);
``score`` what "magnitude" and "adversarial" rank: "gradient" (the head's share of the dense
gradient) or "attention" (the newest query's attention mass on the past).

:class:`~sparse_rtrl.transformer.OnlineTransformer` takes it as ``rule=``; its older string
options (``head_fraction``, ``selection`` "fixed" / "importance", ``importance_score``) are a
convenience that builds one (:meth:`HeadSparse.from_options`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigurationError
from .heads import IMPORTANCE_SCORES, check_fraction

SELECTIONS = ("random", "magnitude", "adversarial")
#: the older names of the head selection and what they are in this vocabulary
LEGACY = {"random": ("random", 1), "fixed": ("random", 0), "importance": ("magnitude", 1),
          "adversarial": ("adversarial", 1)}


@dataclass(frozen=True)
class HeadSparse:
    """m = ⌊fraction·H + ½⌋ heads per block carry gradient to the past (module docstring)."""

    fraction: float = 1.0
    selection: str = "random"
    resample_every: int = 1
    score: str = "gradient"
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "fraction", check_fraction(self.fraction))
        if self.selection not in SELECTIONS:
            raise ConfigurationError(f"unknown head selection {self.selection!r}: choose one of "
                                     f"{', '.join(map(repr, SELECTIONS))} (as for sparse)")
        if self.resample_every not in (0, 1) or isinstance(self.resample_every, bool):
            raise ConfigurationError(f"resample_every must be 1 (a fresh choice every step) or 0 (drawn "
                                     f"once), got {self.resample_every!r}")
        if self.resample_every == 0 and self.selection != "random":
            raise ConfigurationError("resample_every=0 fixes a random choice; magnitude and adversarial "
                                     "rank this step's scores: leave resample_every=1")
        if self.score not in IMPORTANCE_SCORES:
            raise ConfigurationError(f"unknown score {self.score!r}: choose one of "
                                     f"{', '.join(map(repr, IMPORTANCE_SCORES))}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigurationError(f"seed must be an int, got {self.seed!r}")

    @classmethod
    def from_options(cls, head_fraction: float = 1.0, selection: str = "random",
                     importance_score: str = "gradient", seed: int = 0) -> "HeadSparse":
        """The rule the older string options name ("fixed": random, drawn once;
        "importance": magnitude)."""
        if selection not in LEGACY:
            raise ConfigurationError(f"unknown head selection {selection!r}: use one of "
                                     f"{', '.join(map(repr, LEGACY))}, or rule=HeadSparse(...)")
        if importance_score not in IMPORTANCE_SCORES:
            raise ConfigurationError(f"unknown importance_score {importance_score!r}: use one of "
                                     f"{', '.join(map(repr, IMPORTANCE_SCORES))}")
        name, every = LEGACY[selection]
        return cls(head_fraction, name, every, importance_score, seed)

    @property
    def legacy_selection(self) -> str:
        """The name the head selector uses internally."""
        return {("random", 1): "random", ("random", 0): "fixed", ("magnitude", 1): "importance",
                ("adversarial", 1): "adversarial"}[(self.selection, self.resample_every)]
