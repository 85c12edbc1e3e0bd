"""Errors raised by the library; each message names the problem and how to fix it."""

from __future__ import annotations


class SparseRTRLError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigurationError(SparseRTRLError, ValueError):
    """An option, name or size is invalid (unknown rule, k out of range, ...)."""


class InputError(SparseRTRLError, ValueError):
    """A tensor handed to the learner has the wrong shape, dtype, device or values."""


class DivergenceError(SparseRTRLError, FloatingPointError):
    """The state, the sensitivity M or a gradient became non-finite.

    Attributes:
        step: index of the step (counted from the learner's creation) that failed.
        what: which quantity was non-finite ("state", "jacobian", "immediate influence",
            "gradient").
    The learner keeps its last good state: ``learner.state`` and the transport state are
    those of step ``step - 1``.
    """

    def __init__(self, step: int, what: str, detail: str = ""):
        self.step = step
        self.what = what
        msg = (
            f"divergence at step {step}: the {what} became non-finite (NaN or inf). "
            f"The learner still holds its last good state (step {step - 1}); lower the "
            f"learning rate, use float64, or call reset_state() before continuing."
        )
        if detail:
            msg += " " + detail
        super().__init__(msg)
