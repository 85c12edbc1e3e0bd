"""The paper-reproduction experiments: configs as data (profiles), the adaptation protocol,
the sweep runner (local or Ray executors), claims with their verdict rules, and the report.

The library (``sparse_rtrl`` outside this package) never imports from here.
"""

from .config import FROZEN, READOUT, Experiment, Method
from .profiles import experiments
from .runner import Sweep, load_results

__all__ = ["FROZEN", "READOUT", "Experiment", "Method", "Sweep", "experiments", "load_results"]
