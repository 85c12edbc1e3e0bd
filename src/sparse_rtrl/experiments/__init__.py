"""The paper-reproduction experiments: configs as data (profiles), the adaptation protocol,
the sweep runner (local or Ray executors), claims with their verdict rules, and the report.

The library (``sparse_rtrl`` outside this package) never imports from here.
"""

from .config import FROZEN, READOUT, Experiment, Method
from .profiles import experiments
from .results import load_results


def __getattr__(name: str):
    # the sweep driver (torch, executors) loads only when asked for: reading results and
    # rebuilding a report do not need it
    if name == "Sweep":
        from .runner import Sweep

        return Sweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["FROZEN", "READOUT", "Experiment", "Method", "Sweep", "experiments", "load_results"]
