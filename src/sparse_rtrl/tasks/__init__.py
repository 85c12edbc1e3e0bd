"""Tasks of the adaptation experiments: seeded data streams whose process shifts A → B.

``make_task(name, **options)`` builds a task; ``task.sample(regime, steps, seed)`` draws a
:class:`Stream` of regime "A" (pretraining) or "B" (after the shift);
``task.sample_shift(before, after, seed)`` draws one stream that shifts at step ``before``.
See docs/tasks.md for the equations, defaults and shifts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigurationError
from .adding import Adding
from .bci import BCI
from .delayed_teacher import DelayedTeacher
from .lag_shift import LagShift
from .base import REGIMES, AbstractTask, Stream, stream_generator
from .lorenz import Lorenz
from .marschall_add import MarschallAdd
from .mimic import Mimic
from .sine import Sine

__all__ = [
    "REGIMES",
    "TASKS",
    "AbstractTask",
    "Adding",
    "BCI",
    "DelayedTeacher",
    "LagShift",
    "Lorenz",
    "MarschallAdd",
    "Mimic",
    "Sine",
    "Stream",
    "describe",
    "make_task",
    "register",
    "stream_generator",
]

#: name → task class; ``make_task`` and the experiment configs read names from here only
TASKS: dict[str, type[AbstractTask]] = {}


def register(cls: type[AbstractTask]) -> type[AbstractTask]:
    """Make a task class constructible by its ``name``."""
    TASKS[cls.name] = cls
    return cls


for _cls in (Sine, Lorenz, Adding, MarschallAdd, Mimic, BCI, LagShift, DelayedTeacher):
    register(_cls)


def make_task(name: str, **options: Any) -> AbstractTask:
    """A task from its name and options, e.g. ``make_task("sine", horizon=5)``.

    Unknown names or options, and invalid values, raise ``ConfigurationError``.
    """
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigurationError(
            f"unknown task {name!r}: choose one of {', '.join(sorted(TASKS))}"
        )
    cls = TASKS[name]
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigurationError(
            f"task {name!r} has no option(s) {', '.join(unknown)}; its options are: "
            f"{', '.join(allowed)}"
        )
    return cls(**options)


def describe(name: str | None = None, **options: Any) -> dict[str, Any]:
    """Metadata of one task (``describe("sine", horizon=5)``) or, with no name, of every
    registered task with its defaults (a dict keyed by name)."""
    if name is None:
        if options:
            raise ConfigurationError("options need a task name: describe(name, **options)")
        return {n: cls().describe() for n, cls in TASKS.items()}
    return make_task(name, **options).describe()
