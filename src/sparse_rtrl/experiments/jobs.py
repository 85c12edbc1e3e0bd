"""The jobs of a sweep: what a worker runs, as small frozen dataclasses, and the driver's
entry for each (:class:`Planned`: where its result goes).

A job holds only what its numbers depend on and is picklable, so it crosses a local process
pool or a Ray cluster as it is; the worker dispatches on its type
(:func:`sparse_rtrl.experiments.runner.execute`). Paths, run keys and duplicate targets stay
with the driver, which writes every result file itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from .config import Experiment, Method


@dataclass(frozen=True)
class PretrainJob:
    """Pretrain the model of ``experiment`` for ``seed`` (the result is its snapshot)."""

    experiment: Experiment
    seed: int
    #: the driver's numerics (``preflight.numerics``); a worker computing otherwise refuses
    numerics: dict | None = None


@dataclass(frozen=True)
class RunJob:
    """One adaptation run: ``method`` at rate ``lr`` from the snapshot file of ``seed``."""

    experiment: Experiment
    method: Method
    seed: int
    lr: float
    snapshot: str
    numerics: dict | None = None


@dataclass(frozen=True)
class GroupJob:
    """The runs of one (experiment, method, lr) for several seeds, as one ensemble
    (``grouping.adapt_group``); the result is one run result per seed, in order."""

    experiment: Experiment
    method: Method
    lr: float
    seeds: tuple[int, ...]
    snapshots: tuple[str, ...]
    numerics: dict | None = None


Job = Union[PretrainJob, RunJob, GroupJob]


def run_count(job: Job) -> int:
    """How many runs (seeds) a job does: the progress bar counts runs, not jobs."""
    return len(job.seeds) if isinstance(job, GroupJob) else 1


@dataclass
class Planned:
    """A job as the driver holds it: the job sent to a worker, the result file it fills
    (``path``, with the header ``meta``: run key, kind, config, versions), the files of
    other runs with the same key (``also``, written from the same result) and, for a group,
    its member runs (each a solo :class:`Planned`; the group itself has no file)."""

    job: Job
    path: Path | None
    meta: dict
    also: list["Planned"] = field(default_factory=list)
    members: list["Planned"] = field(default_factory=list)

    def runs(self) -> list["Planned"]:
        """The solo runs this entry stands for (itself, or a group's members)."""
        return self.members or [self]
