"""The common shape of a task: a seeded data stream whose generating process shifts A → B.

A task is a frozen dataclass of its parameters. ``sample(regime, steps, seed)`` returns a
:class:`Stream` drawn entirely from regime ``"A"`` (pretraining) or ``"B"`` (after the shift);
``sample_shift(steps_before, steps_after, seed)`` returns one continuous stream whose process
changes from A to B at step ``steps_before`` (the signal, attractor or bit stream carries on
across the shift; nothing is reset unless the task is made of sequences).

Randomness: every stream owns one ``torch.Generator`` whose seed is a hash of (task name,
regime or "A>B", seed), so streams are reproducible across processes and platforms, streams of
different seeds or regimes are independent, and the global torch RNG is never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import torch

from ..errors import ConfigurationError, InputError

Tensor = torch.Tensor

REGIMES = ("A", "B")

#: (regime, steps) pieces of a stream, in time order
Segments = tuple[tuple[str, int], ...]


@dataclass(frozen=True, eq=False)
class Stream:
    """T steps of a task: what the learner sees, what it should output, and when.

    ``info`` holds small per-step extras (each a tensor whose first dimension is T):
    ``"regime"`` (int8, 0 = A, 1 = B) always; tasks document any others.
    """

    inputs: Tensor
    """(T, input_size) float64: the input x_t fed at step t."""
    targets: Tensor
    """(T, output_size) float64: the target of the output at step t (meaningful where
    ``error_mask`` is True)."""
    error_mask: Tensor
    """(T,) bool: steps where an error signal (a loss) is given."""
    starts: Tensor
    """(T,) bool: steps where a new sequence begins (reset the state before the step);
    ``starts[0]`` is True."""
    info: Mapping[str, Tensor] = field(default_factory=dict)
    """Small per-step extras, e.g. for plots; see the task's docstring."""

    def __post_init__(self):
        T = self.inputs.shape[0]
        checks = [
            (self.inputs, 2, torch.float64, "inputs"),
            (self.targets, 2, torch.float64, "targets"),
            (self.error_mask, 1, torch.bool, "error_mask"),
            (self.starts, 1, torch.bool, "starts"),
        ]
        for t, ndim, dtype, what in checks:
            if t.dim() != ndim or t.shape[0] != T or t.dtype != dtype:
                raise InputError(
                    f"Stream.{what} must be a {dtype} tensor of {ndim} dimension(s) with T={T} "
                    f"rows, got {t.dtype} of shape {tuple(t.shape)}"
                )
        if T == 0 or not bool(self.starts[0]):
            raise InputError("a Stream needs at least one step and starts[0] = True")
        for key, t in self.info.items():
            if t.shape[0] != T:
                raise InputError(f"Stream.info[{key!r}] must have T={T} rows, got {tuple(t.shape)}")

    @property
    def steps(self) -> int:
        """T, the number of steps."""
        return self.inputs.shape[0]

    def __len__(self) -> int:
        return self.steps


def stream_generator(task_name: str, key: str, seed: int) -> torch.Generator:
    """The generator of one stream: seeded by a stable hash of (task name, key, seed)."""
    digest = hashlib.sha256(f"sparse_rtrl.tasks|{task_name}|{key}|{seed}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return g


def regime_codes(segments: Segments) -> Tensor:
    """(T,) int8: 0 where the step belongs to regime A, 1 for B."""
    return torch.cat([torch.full((n,), REGIMES.index(r), dtype=torch.int8) for r, n in segments])


def continuous_stream(
    inputs: Tensor, targets: Tensor, segments: Segments, **info: Tensor
) -> Stream:
    """A stream with an error at every step and one sequence (``starts`` only at step 0)."""
    T = inputs.shape[0]
    starts = torch.zeros(T, dtype=torch.bool)
    starts[0] = True
    return Stream(
        inputs=inputs,
        targets=targets,
        error_mask=torch.ones(T, dtype=torch.bool),
        starts=starts,
        info={"regime": regime_codes(segments), **info},
    )


def mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean of (prediction − target)² over all elements: over the outputs of one stream, and
    also over the streams of a batch (the mean per-stream loss, as ``torch.nn.MSELoss``)."""
    check_pair(prediction, target)
    return (prediction - target).pow(2).mean()


def check_pair(prediction: Tensor, target: Tensor) -> None:
    if prediction.shape != target.shape:
        raise InputError(
            f"prediction has shape {tuple(prediction.shape)} but the target has shape "
            f"{tuple(target.shape)}: pass the readout's output for the same step(s) as the target"
        )


class AbstractTask(ABC):
    """A seeded data stream with a regime shift; subclasses are frozen dataclasses.

    Subclasses set ``name`` and ``continuous_error``, implement ``input_size``,
    ``output_size``, ``describe_shift`` and ``_generate`` (the stream for a list of
    (regime, steps) segments from one generator), and override ``loss`` if it is not MSE.
    """

    name: ClassVar[str]
    continuous_error: ClassVar[bool] = True
    """True when every step has a target (an error signal at every step)."""

    # -- to implement ----------------------------------------------------------------------
    @property
    @abstractmethod
    def input_size(self) -> int: ...

    @property
    @abstractmethod
    def output_size(self) -> int: ...

    @abstractmethod
    def describe_shift(self) -> str:
        """One line for reports: what changes from A to B, with the numbers."""

    @abstractmethod
    def _generate(self, segments: Segments, gen: torch.Generator) -> Stream:
        """The stream made of ``segments`` (already validated), drawing only from ``gen``."""

    # -- the public interface --------------------------------------------------------------
    def sample(self, regime: str, steps: int, seed: int) -> Stream:
        """``steps`` steps of regime ``"A"`` (pretraining) or ``"B"`` (after the shift).

        Deterministic in (task parameters, regime, steps, seed); different seeds and the two
        regimes give independent streams. A longer stream of the same seed is a different
        draw, not an extension.
        """
        regime = check_regime(regime)
        steps = check_count(steps, "steps", minimum=1)
        seed = check_count(seed, "seed", minimum=0)
        return self._generate(((regime, steps),), stream_generator(self.name, regime, seed))

    def sample_shift(self, steps_before: int, steps_after: int, seed: int) -> Stream:
        """One stream: ``steps_before`` steps of regime A, then ``steps_after`` of regime B.

        The process carries on across the shift (same signal, trajectory or bit stream, now
        with B's parameters); ``info["regime"]`` marks the two parts. It is a draw of its
        own: its first part is not ``sample("A", steps_before, seed)``.
        """
        before = check_count(steps_before, "steps_before", minimum=1)
        after = check_count(steps_after, "steps_after", minimum=1)
        seed = check_count(seed, "seed", minimum=0)
        gen = stream_generator(self.name, "A>B", seed)
        return self._generate((("A", before), ("B", after)), gen)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """The per-step loss: mean squared error over the outputs (a batch ``(B, out)`` gives
        the mean over its B streams).

        Score it only where ``error_mask`` is True.
        """
        return mse(prediction, target)

    def options(self) -> dict[str, Any]:
        """The task's parameters, as ``make_task(name, **options)`` accepts them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> dict[str, Any]:
        """Metadata for reports: name, sizes, whether the error is continuous, the shift."""
        return {
            "name": self.name,
            "input_size": self.input_size,
            "output_size": self.output_size,
            "continuous_error": self.continuous_error,
            "shift": self.describe_shift(),
            "options": self.options(),
        }


# -- validation helpers shared by the tasks --------------------------------------------------
def check_regime(regime: str) -> str:
    if regime not in REGIMES:
        raise ConfigurationError(
            f"regime must be 'A' (pretraining) or 'B' (after the shift), got {regime!r}"
        )
    return regime


def check_count(value: Any, what: str, minimum: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise ConfigurationError(f"{what} must be an int ≥ {minimum}, got {value!r}") from None
    if n < minimum:
        raise ConfigurationError(f"{what} must be an int ≥ {minimum}, got {n}")
    return n


def check_float(
    value: Any, what: str, *, low: float | None = None, positive: bool = False
) -> float:
    """A finite float (≥ ``low`` if given; > 0 if ``positive``)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ConfigurationError(f"{what} must be finite, got {value!r}")
    if positive and x <= 0:
        raise ConfigurationError(f"{what} must be > 0, got {x}")
    if low is not None and x < low:
        raise ConfigurationError(f"{what} must be ≥ {low}, got {x}")
    return x


def check_floats(values: Any, what: str, *, length: int | None = None, **kw) -> tuple[float, ...]:
    """A tuple of floats (a list from a config file is accepted)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigurationError(f"{what} must be a sequence of numbers, got {values!r}")
    out = tuple(check_float(v, f"{what}[{i}]", **kw) for i, v in enumerate(values))
    if not out:
        raise ConfigurationError(f"{what} must not be empty")
    if length is not None and len(out) != length:
        raise ConfigurationError(f"{what} must have {length} entries, got {len(out)}")
    return out


def set_field(obj: Any, name: str, value: Any) -> None:
    """Normalise a field of a frozen dataclass in ``__post_init__``."""
    object.__setattr__(obj, name, value)


def fmt(x: float) -> str:
    """A compact number for one-line descriptions."""
    return f"{x:.4g}"
