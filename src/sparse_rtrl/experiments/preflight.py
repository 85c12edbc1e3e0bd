"""Checks before a sweep's first run: everything it will need, found in seconds, not after
twenty minutes of computing.

:func:`check` looks at the optional packages the report needs (the ``experiments`` extra),
the executor (Ray for ``--executor ray``) and the worker count, the output folder, every
experiment's task data (real BCI sessions are loaded), and builds the compiled CPU kernels
once in the driver (so no run compiles them inside a timed step). Every problem found becomes
one line naming its fix; any problem raises :class:`PreflightError` with all of them.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Iterable

import torch

from ..errors import ConfigurationError, SparseRTRLError
from ..tasks import make_task
from ..transport import kernels
from .config import Experiment

#: module → the install command that provides it
EXTRAS = {
    "matplotlib": "pip install -e '.[experiments]' (or pip install 'sparse_rtrl[experiments]')",
    "scipy": "pip install -e '.[experiments]' (or pip install 'sparse_rtrl[experiments]')",
}
RAY = "pip install -e '.[ray]' (or pip install ray), or use --executor local"


class PreflightError(ConfigurationError):
    """Something a sweep needs is missing; one line per problem, each naming the fix."""


def missing(modules: dict[str, str]) -> list[str]:
    """One line per module of ``modules`` (module → fix) that cannot be imported."""
    lines = []
    for module, fix in modules.items():
        try:
            importlib.import_module(module)
        except ImportError as err:  # also a module set to None in sys.modules
            lines.append(f"{module} is not importable ({err}): {fix}")
    return lines


def _writable(out: Path) -> str | None:
    """Why ``out`` cannot be created or written, or None."""
    folder = out
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"--out {out}: {folder} is a file, not a folder; choose another --out"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--out {out}: {folder} is not writable; choose another --out"
    return None


def _task_problems(experiments: Iterable[Experiment]) -> list[str]:
    """Build every distinct task once and read its sizes (real sessions are loaded here)."""
    lines, seen = [], set()
    for exp in experiments:
        key = (exp.task, repr(sorted(exp.task_options.items())))
        if key in seen:
            continue
        seen.add(key)
        try:
            task = make_task(exp.task, **exp.task_options)
            task.input_size, task.output_size  # noqa: B018 - loads the data of real sources
        except ImportError as err:
            lines.append(f"experiment {exp.name}: {err}: pip install -e '.[data]' (h5py, scipy for "
                         ".mat and .nwb files)")
        except (SparseRTRLError, OSError) as err:
            lines.append(f"experiment {exp.name}: {err}")
    return lines


def numerics(device: str = "cpu") -> dict[str, str]:
    """What computes a run's numbers on ``device``: the numeric path of the sparse products
    (:func:`sparse_rtrl.transport.kernels.numeric_path`) and the torch version."""
    return {"numeric_path": kernels.numeric_path(device), "torch": torch.__version__}


def check(experiments: Iterable[Experiment], out: Path | str, executor: str = "local",
          workers: int | None = None, report: bool = True) -> dict[str, str]:
    """Raise :class:`PreflightError` naming every fix needed before ``experiments`` can run
    into ``out``; return the CPU :func:`numerics` the runs will use.

    ``report``: whether the report (matplotlib, scipy) will be built afterwards.
    """
    experiments = list(experiments)
    lines = missing(EXTRAS) if report else []
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        lines.append(f"--workers {workers}: the number of parallel runs must be at least 1")
    if executor == "ray":
        lines += missing({"ray": RAY})
    elif executor != "local":
        lines.append(f"unknown executor {executor!r}: choose 'local' or 'ray'")
    problem = _writable(Path(out))
    if problem:
        lines.append(problem)
    lines += _task_problems(experiments)
    if lines:
        raise PreflightError("\n".join(lines))
    return numerics("cpu")
