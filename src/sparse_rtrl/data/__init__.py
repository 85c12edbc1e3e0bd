"""Data for the BCI task: real recordings binned into sessions, and a drifting synthetic array.

Every source returns a :class:`Session` — counts ``(T, C)`` int64, velocity ``(T, 2)``
float64, bin start times, channel names, bin width and provenance:

- :func:`load_indy`: O'Doherty/Sabes "Indy"/"Loco" MATLAB v7.3 files (spike times);
- :func:`load_nwb`: Neural Latents Benchmark / DANDI NWB 2 files (spike times);
- :func:`load_binned`: already-binned ``.npz`` or MATLAB v5 ``.mat`` arrays;
- :class:`DriftingPopulation`: cosine-tuned synthetic sessions with electrode drift;
- :func:`simulate_drift`: simulated drift applied to a real session's counts.

The file loaders need the ``data`` extra (h5py, scipy); the generator needs neither.
"""

from .binned import load_binned
from .drift import RecordingDrift, simulate_drift
from .errors import DataError
from .indy import load_indy
from .nwb import load_nwb
from .population import DriftingPopulation, Tuning
from .reaching import min_jerk, reach_trajectory
from .session import Session

__all__ = [
    "DataError",
    "DriftingPopulation",
    "RecordingDrift",
    "Session",
    "Tuning",
    "load_binned",
    "load_indy",
    "load_nwb",
    "min_jerk",
    "reach_trajectory",
    "simulate_drift",
]
