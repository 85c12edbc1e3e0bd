"""Runs on a Ray cluster (``--executor ray``): one Ray task per run with resource hints; the
driver still writes every result file, so a lost worker loses at most its run in flight, which
Ray retries."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from ..errors import ConfigurationError
from .executors import Job, Outcome, check_workers


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigurationError(
            "the Ray executor needs Ray: install it with pip install 'sparse_rtrl[ray]' "
            "(or pip install ray), or use --executor local"
        ) from None
    return ray


class RayExecutor:
    """Submits each job as a Ray task with ``resources(job)`` (CPUs, memory, GPUs).

    Args:
        address: an existing cluster ("auto", "ray://host:10001", ...); None starts a local
            cluster for the sweep and shuts it down afterwards.
        workers: CPUs of the local cluster (ignored with an address).
        max_retries: how often a run is retried when its worker dies.
        resources: job → Ray options; default from ``sparse_rtrl.experiments.runner.resources``.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, max_retries: int = 3,
                 resources: Callable[[Job], dict] | None = None):
        check_workers(workers)
        ray = _ray()
        self._ray = ray
        self.max_retries = max_retries
        self._resources = resources
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address is None:
                kwargs["num_cpus"] = workers
                self._owns = True
            ray.init(address=address, **kwargs)

    def map(self, fn: Callable[[Job], Any], jobs: Iterable[Job]) -> Iterator[Outcome]:
        ray = self._ray
        if self._resources is None:
            from .runner import resources as default_resources

            self._resources = default_resources
        remote = ray.remote(fn)
        pending = {}
        for job in jobs:
            opts = {"max_retries": self.max_retries, "retry_exceptions": False, **self._resources(job)}
            pending[remote.options(**opts).remote(job)] = job
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    yield job, ray.get(ref), None
                except Exception as err:  # noqa: BLE001 - reported by the driver
                    yield job, None, err

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
