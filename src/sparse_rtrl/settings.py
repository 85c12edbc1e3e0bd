"""The library's switches, in one place: each is read from its ``SPARSE_RTRL_*`` environment
variable (this module is the only reader of them) unless Python code sets it with
:func:`using`. The table of all of them is in docs/architecture.md ("Settings").

- ``SPARSE_RTRL_DATA`` — :func:`data_dir`: the folder of the shared recordings (the BCI
  sources chewie and stevenson). Python: the ``data_dir=`` arguments, or ``using(data_dir=…)``.
- ``SPARSE_RTRL_NO_ENSEMBLE=1`` — :func:`ensembles_enabled`: a sweep runs every seed alone,
  never as one ensemble job (the same result files). Python: ``Sweep(ensembles=False)``, or
  ``using(ensembles=False)``.
- ``SPARSE_RTRL_NO_EXTENSION=1`` — :func:`compiled_kernels_enabled`: the sparse products use
  the pure-torch paths, never the compiled CPU kernels. Python: ``using(compiled_kernels=False)``.
- ``SPARSE_RTRL_NO_TRITON=1`` — :func:`triton_enabled`: row-sparse products on CUDA never use
  the Triton kernel (pure torch instead). Python: ``using(triton=False)``.
- ``SPARSE_RTRL_CACHE`` — :func:`cache_dir`: the private folder the compiled kernels are
  cached in. Python: ``using(cache_dir=…)``.

A value set with :func:`using` holds in this process only: the worker processes of a sweep
(spawned, or on a Ray cluster) read their own environment, so set the variable for them (a
worker whose numeric path differs from the driver's refuses to run; it never mixes silently).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import ConfigurationError

#: the environment variable of each setting (the names :func:`using` takes)
VARIABLES = {
    "data_dir": "SPARSE_RTRL_DATA",
    "ensembles": "SPARSE_RTRL_NO_ENSEMBLE",
    "compiled_kernels": "SPARSE_RTRL_NO_EXTENSION",
    "triton": "SPARSE_RTRL_NO_TRITON",
    "cache_dir": "SPARSE_RTRL_CACHE",
}

_overrides: dict[str, object] = {}


def _env(name: str) -> str | None:
    return os.environ.get(VARIABLES[name])


def _switched_off(name: str) -> bool:
    """A ``SPARSE_RTRL_NO_*`` variable counts as set unless it is empty or 0."""
    return (_env(name) or "").strip() not in ("", "0")


def _enabled(name: str) -> bool:
    """A switch that is on unless :func:`using` turns it off or its ``SPARSE_RTRL_NO_*``
    variable is set (:func:`_switched_off`)."""
    if name in _overrides:
        return bool(_overrides[name])
    return not _switched_off(name)


def data_dir() -> Path | None:
    """The folder of the shared recordings as configured: :func:`using` (``data_dir=``), else
    ``$SPARSE_RTRL_DATA``, else None (the BCI task then looks beside the source checkout)."""
    if "data_dir" in _overrides:
        value = _overrides["data_dir"]
        return None if value is None else Path(value)
    env = _env("data_dir")
    return Path(env) if env else None


def ensembles_enabled() -> bool:
    """Whether a sweep may run the seeds of a method as one ensemble job: yes unless
    ``$SPARSE_RTRL_NO_ENSEMBLE`` is set to something other than 0 (or ``using(ensembles=False)``)."""
    return _enabled("ensembles")


def compiled_kernels_enabled() -> bool:
    """Whether the compiled CPU kernels may be used: yes unless ``$SPARSE_RTRL_NO_EXTENSION``
    is set to something other than 0 (or ``using(compiled_kernels=False)``)."""
    return _enabled("compiled_kernels")


def triton_enabled() -> bool:
    """Whether row-sparse products on CUDA may use the Triton kernel: yes unless
    ``$SPARSE_RTRL_NO_TRITON`` is set to something other than 0 (or ``using(triton=False)``)."""
    return _enabled("triton")


def cache_dir() -> str:
    """The kernel cache folder (not created): :func:`using` (``cache_dir=``), else
    ``$SPARSE_RTRL_CACHE``, else ``$XDG_CACHE_HOME/sparse_rtrl``, else ``~/.cache/sparse_rtrl``."""
    if _overrides.get("cache_dir") is not None:
        return str(_overrides["cache_dir"])
    return _env("cache_dir") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sparse_rtrl")


@contextmanager
def using(**values) -> Iterator[None]:
    """Set settings for this process inside a ``with`` block, whatever the environment says::

        with sparse_rtrl.settings.using(compiled_kernels=False):
            ...  # the pure-torch paths

    Names: ``data_dir``, ``ensembles``, ``compiled_kernels``, ``triton``, ``cache_dir``; the previous
    values come back on exit.
    """
    unknown = set(values) - set(VARIABLES)
    if unknown:
        raise ConfigurationError(f"unknown settings {sorted(unknown)}: use {', '.join(VARIABLES)}")
    saved = dict(_overrides)
    _overrides.update(values)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)
