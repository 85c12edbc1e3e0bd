"""Where runs execute. The driver hands out jobs and writes every result itself, so an
executor only maps a function over jobs; the local process pool is the default."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator

from ..errors import ConfigurationError
from .jobs import Job

Outcome = tuple[Job, Any, BaseException | None]


def check_workers(workers: int | None) -> None:
    """Refuse a worker count below 1 (0 would wait for ever on a pool with no worker)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigurationError(f"workers={workers!r}: the number of parallel runs must be a whole "
                                 "number ≥ 1 (or None for one per core)")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class LocalExecutor:
    """Runs jobs in a pool of ``workers`` processes (spawned; one torch thread each), or
    inline when ``workers == 1``. Yields (job, result, error) as runs finish."""

    name = "local"

    def __init__(self, workers: int | None = None):
        check_workers(workers)
        self.workers = workers or default_workers()

    def map(self, fn: Callable[[Job], Any], jobs: Iterable[Job]) -> Iterator[Outcome]:
        jobs = list(jobs)
        if self.workers == 1 or len(jobs) <= 1:
            for job in jobs:
                try:
                    yield job, fn(job), None
                except Exception as err:  # noqa: BLE001 - reported by the driver
                    yield job, None, err
            return
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)), mp_context=ctx) as pool:
            pending = {pool.submit(fn, job): job for job in jobs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = pending.pop(fut)
                    err = fut.exception()
                    yield job, None if err else fut.result(), err

    def close(self) -> None:
        pass
